"""SSH keys: a fresh ed25519 keypair per job, stored 0600 in the data dir; known_hosts files."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from lando_ssh.errors import LandoError


def generate_keypair(path: str, comment: str = "") -> str:
    """A new ed25519 pair made by OpenSSH's `ssh-keygen`: the private key at `path` (0600), the public one
    beside it (`.pub`); returns the public key line. ssh-keygen takes ~3 ms; loading the `cryptography`
    package in-process for it cost every `lando-ssh job` ~50 ms."""
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(path + ".pub") as f:
            return f.read().strip()
    except FileNotFoundError as e:
        if e.filename == "ssh-keygen":
            raise LandoError("ssh-keygen is not installed (it comes with OpenSSH's client: "
                             "apt-get install openssh-client)") from None
        raise
    except subprocess.CalledProcessError as e:
        raise LandoError(f"ssh-keygen could not make a key at {path}: "
                         f"{e.stderr.decode(errors='replace').strip()}") from None


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Write a secret file created with `mode` from the start (never briefly world-readable)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def known_hosts_line(address: str, port: int, key: str) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {' '.join(key.split()[:2])}"


@dataclass
class JobKeys:
    """Where job N's keys live: <data_dir>/keys/job-N (private, 0600), .pub, .known_hosts."""

    keys_dir: str
    job_id: int

    @property
    def private_path(self) -> str:
        return os.path.join(self.keys_dir, f"job-{self.job_id}")

    @property
    def public_path(self) -> str:
        return self.private_path + ".pub"

    @property
    def known_hosts_path(self) -> str:
        return self.private_path + ".known_hosts"

    def ensure(self) -> str:
        """The job's public key, generating the pair on first use."""
        if os.path.exists(self.private_path) and os.path.exists(self.public_path):
            with open(self.public_path) as f:
                return f.read().strip()
        os.makedirs(self.keys_dir, mode=0o700, exist_ok=True)
        # made under a name of its own, then moved into place: a crash never leaves half a pair
        tmp = f"{self.private_path}.new{os.getpid()}"
        for leftover in (tmp, tmp + ".pub"):  # of a crashed try (ssh-keygen would ask before overwriting)
            if os.path.lexists(leftover):
                os.unlink(leftover)
        public = generate_keypair(tmp, f"lando-ssh-job-{self.job_id}")
        os.replace(tmp + ".pub", self.public_path)
        os.replace(tmp, self.private_path)
        return public

    def pin_host(self, address: str, port: int, host_keys: list[str]) -> None:
        lines = "".join(known_hosts_line(address, port, k) + "\n" for k in host_keys)
        write_private(self.known_hosts_path, lines)

    def remove(self) -> None:
        for p in (self.private_path, self.public_path, self.known_hosts_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
