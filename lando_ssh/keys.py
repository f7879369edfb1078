"""SSH keys: a fresh ed25519 keypair per job, stored 0600 in the data dir; known_hosts files."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_keypair(comment: str = "") -> tuple[str, str]:
    """(private key in OpenSSH PEM form, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}".strip()


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
        private, public = generate_keypair(f"lando-ssh-job-{self.job_id}")
        write_private(self.private_path, private)
        write_private(self.public_path, public + "\n", 0o644)
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
