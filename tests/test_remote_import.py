"""How paramiko is imported: in the background, without invoke, and without importlib.metadata's import."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _fresh_python(code: str) -> str:
    """Run code in a new interpreter (this one has long imported importlib.metadata)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_paramiko_loads_without_importing_importlib_metadata_or_invoke_and_knows_its_version():
    out = _fresh_python("""
        import sys
        from lando_ssh.remote import _paramiko
        paramiko = _paramiko()
        from importlib.metadata import version  # the real module, loaded only now
        print(paramiko.__version__ == version("paramiko"), "invoke" in sys.modules)
    """)
    assert out.split() == ["True", "False"]


def test_a_thread_that_meets_the_metadata_stand_in_gets_everything_the_real_module_has():
    out = _fresh_python("""
        import importlib, sys
        from lando_ssh.remote import _own_version_without_metadata
        with _own_version_without_metadata("paramiko"):
            from importlib import metadata  # as another thread importing meanwhile would find it
            stand_in = metadata
            assert "importlib.metadata" not in sys.modules
            print(metadata.version("paramiko") == stand_in._known[1])
            print(metadata.version("pika"), metadata.PackageNotFoundError.__name__)
            print(any(e.name == "lando-ssh" for e in metadata.entry_points(group="console_scripts")))
            try:
                metadata.version("no-such-distribution")
            except metadata.PackageNotFoundError:
                print("not found")
        import importlib.metadata as real
        print(importlib.metadata is real is sys.modules["importlib.metadata"], real is not stand_in)
    """)
    import pika
    assert out.split("\n")[:-1] == ["True", f"{pika.__version__} PackageNotFoundError", "True", "not found",
                                    "True True"]


def test_without_the_stand_in_when_importlib_metadata_is_already_loaded():
    out = _fresh_python("""
        import importlib.metadata, sys
        from lando_ssh.remote import _own_version_without_metadata
        with _own_version_without_metadata("paramiko"):
            from importlib import metadata
            print(metadata is sys.modules["importlib.metadata"])
    """)
    assert out.strip() == "True"
