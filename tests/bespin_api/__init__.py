"""A local bespin-api for tests: the admin REST endpoints lando-ssh uses, jobs kept in memory.

In a test: `BespinApiService(token, queue=...).start()`, then `add_job(...)`, `start_job(id)`;
stand-alone: `python -m tests.bespin_api --port 8000 --token secret --queue lando`.
"""
from .service import BespinApiService, lando_work_request

__all__ = ["BespinApiService", "lando_work_request"]
