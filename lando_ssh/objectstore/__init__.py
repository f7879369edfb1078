"""Object storage (OpenStack Swift, S3): inputs named `swift://container/path` or `s3://bucket/key`, and
outputs sent to such a prefix, moved by the VM straight from and to the store.

This server holds the store's credentials and never moves the bytes: it looks objects up, signs a grant
per object (a Swift temp URL, an S3 presigned URL) valid for `object_store.grant_seconds`, and hands the
grants to the VM's `lando-objects` on its standard input. Segmented uploads (Swift SLO, S3 multipart) are
made whole by this server once the VM has sent every part: until then no object looks whole; the parts of an
upload cut short are removed. A job of a project `object_store.projects` names uses that project's credentials.

- `urls`: the `swift://` / `s3://` URLs (pure)
- `stores`: one store per scheme behind `Store` (`swift.py`, `s3.py`), each translating its library's errors
- `vmplan`: the plans `lando-objects` reads, the output object rewritten to the uploaded objects (pure)
- `transfer`: the staging and storing hooks the engine calls
"""
