"""Cloud-init user data for a job's VM, and reading the host keys cloud-init prints.

The user data is a `#cloud-config` document: the job's public key for the login user, the
data volume formatted and mounted at the work dir (when the job has one), and a `runcmd`
that prepares the work dir and marks the VM ready. cloud-init prints the SSH host keys to
the console between `-----BEGIN SSH HOST KEY KEYS-----` markers; we pin what it printed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

READY_MARKER = ".lando-ready"
VOLUME_LABEL = "lando_work"
_KEY_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)
_KEY_LINE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa|sk-ssh-ed25519@openssh\.com)\s+([A-Za-z0-9+/=]+)")


@dataclass
class UserDataParams:
    public_key: str  # "ssh-ed25519 AAAA... comment"
    user: str  # login user that owns the work dir
    work_dir: str
    volume_device: str | None = None  # e.g. /dev/vdb when the job has a data volume


def render_user_data(p: UserDataParams) -> str:
    doc: dict = {
        "ssh_authorized_keys": [p.public_key.strip()],
        "ssh_deletekeys": True,  # fresh host keys per VM, printed to the console
        "ssh_pwauth": False,
    }
    if p.volume_device:
        part = re.fullmatch(r"(/dev/\D+)(\d+)", p.volume_device)
        if part:  # a partition (bespin's default /dev/vdb1): one partition table, made once
            doc["disk_setup"] = {part.group(1): {"table_type": "gpt", "layout": True, "overwrite": False}}
            fs = {"device": part.group(1), "partition": int(part.group(2))}
        else:
            fs = {"device": p.volume_device}
        doc["fs_setup"] = [{"label": VOLUME_LABEL, "filesystem": "ext4", **fs}]
        doc["mounts"] = [[f"LABEL={VOLUME_LABEL}", p.work_dir, "auto", "defaults,nofail", "0", "2"]]
    # argv lists, not strings: cloud-init runs them without a shell, so no quoting is involved
    doc["runcmd"] = [
        ["mkdir", "-p", p.work_dir],
        ["chown", p.user, p.work_dir],
        ["touch", f"{p.work_dir.rstrip('/')}/{READY_MARKER}"],
    ]
    # JSON is YAML, and cloud-init reads cloud-config with a YAML loader: no YAML library on the job's path
    return "#cloud-config\n" + json.dumps(doc, indent=1) + "\n"


def parse_user_data(text: str) -> dict:
    """The cloud-config document (for drivers that interpret it themselves, like `local`)."""
    if not text.startswith("#cloud-config"):
        raise ValueError("user data is not a #cloud-config document")
    body = text.split("\n", 1)[1] if "\n" in text else ""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:  # written by hand, or by another tool: YAML
        import yaml

        doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else {}


def host_keys_from_console(console: str) -> list[str]:
    """The `type base64` host keys cloud-init printed to the console (the last block printed wins)."""
    blocks = _KEY_BLOCK.findall(console)
    if not blocks:
        return []
    keys = []
    for line in blocks[-1].splitlines():
        m = _KEY_LINE.match(line.strip())
        if m:
            keys.append(f"{m.group(1)} {m.group(2)}")
    return keys
