"""The commands that arrive on the work queue: parsing, validation and encoding. Pure, no I/O.

Wire format (what `lando-ssh send` publishes and what we recommend):

    {"command": "start_job", "payload": {"job_id": 42}, "version": "1"}

For sites moving from lando, the pickled `WorkRequest` that lando-messaging's `LandoClient`
publishes (`lando_messaging.workqueue.WorkRequest` with `command` and `payload`, the payload a
`lando_messaging.messaging.StartJobPayload` / `RestartJobPayload` / `CancelJobPayload` holding
`job_id`) is accepted too, but only through `_LandoUnpickler`, which maps those few classes to
inert stand-ins and refuses every other global: a hostile pickle cannot import or call anything.

Every rejection is a `BadMessage` with a short machine-readable `reason` (it goes into the
dead-letter header) and one readable sentence.
"""
from __future__ import annotations

import io
import json
import pickle  # noqa: S403 - only ever read through _LandoUnpickler, which admits no callables
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from lando_ssh.errors import BadInput

#: Version of our JSON wire format, sent in the "version" field.
MESSAGE_VERSION = "1"
#: Largest job id we accept (a signed 64-bit database key).
MAX_JOB_ID = 2**63 - 1

JSON_CONTENT_TYPES = frozenset({"application/json", "text/json"})
PICKLE_CONTENT_TYPES = frozenset({"application/x-python-pickle", "application/python-pickle",
                                  "application/x-pickle"})
#: Content types that say nothing useful; the body is sniffed (lando sent none at all).
SNIFF_CONTENT_TYPES = frozenset({"", "application/octet-stream", "text/plain"})
_PICKLE_GLOBAL = re.compile(rb"c[\w.]+\n\w+\n")
_DIGITS = re.compile(r"[0-9]{1,30}")  # ASCII digits only (str.isdigit takes other scripts' digits too)


class Command(StrEnum):
    START_JOB = "start_job"
    CANCEL_JOB = "cancel_job"
    RESTART_JOB = "restart_job"


@dataclass(frozen=True)
class Message:
    """One validated command for one job."""

    command: Command
    job_id: int
    version: str | None = None
    format: str = "json"  # "json" or "lando-pickle": where it came from, for the log

    def __str__(self) -> str:
        return f"{self.command.value} for job {self.job_id}"


class BadMessage(BadInput):
    """A message that can never be served; `reason` is a short code, str(self) a sentence."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def encode_message(command: Command | str, job_id: int) -> bytes:
    """The JSON body for one command (validated the same way a consumer will read it)."""
    cmd = _command(command)
    jid = _job_id(job_id)
    return json.dumps({"command": cmd.value, "payload": {"job_id": jid}, "version": MESSAGE_VERSION},
                      separators=(",", ":")).encode()


def parse_message(body: bytes, content_type: str | None, max_bytes: int) -> Message:
    """Read one delivery's body; raise BadMessage naming what is wrong with it."""
    if not isinstance(body, (bytes, bytearray)):
        raise BadMessage("not_bytes", f"the message body is a {type(body).__name__}, not bytes")
    if len(body) > max_bytes:
        raise BadMessage("too_large", f"the message is {len(body)} bytes, more than the limit of {max_bytes}")
    if not body.strip():
        raise BadMessage("empty", "the message body is empty")
    kind = _content_kind(body, content_type)
    if kind == "pickle":
        return _parse_lando_pickle(bytes(body))
    return _parse_json(bytes(body))


def _content_kind(body: bytes, content_type: str | None) -> str:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in JSON_CONTENT_TYPES:
        return "json"
    if ct in PICKLE_CONTENT_TYPES:
        return "pickle"
    if ct not in SNIFF_CONTENT_TYPES:
        raise BadMessage("unsupported_content_type",
                         f"content type {_show(content_type)} is not supported; send application/json")
    return "pickle" if _looks_like_pickle(body) else "json"


def _looks_like_pickle(body: bytes) -> bool:
    # protocol 2+ starts with PROTO (0x80); protocols 0 and 1 (lando under Python 2) with a MARK or a GLOBAL
    return body[:1] in (b"\x80", b"(") or _PICKLE_GLOBAL.match(body) is not None


def _parse_json(body: bytes) -> Message:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("not_utf8", "the message is neither UTF-8 JSON nor a lando pickle") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadMessage("bad_json", "the message is JSON nested too deeply") from None
    except ValueError as e:
        raise BadMessage("bad_json", f"the message is not valid JSON: {_clip(str(e))}") from None
    if not isinstance(data, dict):
        raise BadMessage("not_object", f"the message must be a JSON object, not {_json_kind(data)}")
    if "command" not in data:
        raise BadMessage("missing_command", "the message has no \"command\"")
    if "payload" not in data:
        raise BadMessage("missing_payload", "the message has no \"payload\"")
    payload = data["payload"]
    if not isinstance(payload, dict):
        raise BadMessage("bad_payload", f"the payload must be a JSON object, not {_json_kind(payload)}")
    version = data.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (str, int, float))):
        raise BadMessage("bad_version", f"the version must be a string, not {_json_kind(version)}")
    command = _command(data["command"])
    if "job_id" not in payload:
        raise BadMessage("missing_job_id", "the payload has no \"job_id\"")
    return Message(command, _job_id(payload["job_id"]), None if version is None else str(version), "json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _command(value: object) -> Command:
    if isinstance(value, Command):
        return value
    if not isinstance(value, str):
        raise BadMessage("bad_command", f"the command must be a string, not {_json_kind(value)}")
    try:
        return Command(value)
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise BadMessage("unknown_command", f"unknown command {_show(value)} (known: {known})") from None


def _job_id(value: object) -> int:
    # bespin-api sends the id as its URL gave it, a string of digits, and lando took that: so do we. A bool
    # (an int subclass), a float or any other string is a sender's bug we should not guess around.
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadMessage("bad_job_id", f"the job id must be a whole number or a string of digits, "
                                       f"not {_json_kind(value)}")
    if value < 1 or value > MAX_JOB_ID:
        # a pickle can carry an int too long for str() (Python's 4300-digit limit)
        shown = str(value) if abs(value) < 10**40 else "a number that large"
        raise BadMessage("job_id_out_of_range", f"the job id must be between 1 and {MAX_JOB_ID}, not {shown}")
    return value


# ---- lando-messaging's pickled WorkRequest -------------------------------------------------


class _Inert:
    """A stand-in for one of lando's plain-data classes: it only keeps the attributes it is given."""

    lando_name = ""
    # a class default, never mutated: NEWOBJ builds instances without calling __init__
    attrs: Mapping[str, Any] = MappingProxyType({})

    def __setstate__(self, state: object) -> None:
        # lando's classes pickle their __dict__; anything else (slots, custom state) is not theirs
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise BadMessage("bad_pickle",
                             f"the pickled {self.lando_name} carries a {type(state).__name__} as its state")
        self.attrs = dict(state)


class _WorkRequest(_Inert):
    lando_name = "WorkRequest"


class _StartJobPayload(_Inert):
    lando_name = "StartJobPayload"


class _RestartJobPayload(_Inert):
    lando_name = "RestartJobPayload"


class _CancelJobPayload(_Inert):
    lando_name = "CancelJobPayload"


class _ObjectBase:
    """What `builtins.object` stands for inside a pickle: only usable as `_reconstructor`'s base."""


def _reconstructor(cls: object, base: object, state: object) -> _Inert:
    # lando under Python 2 pickled with protocol 0: copy_reg._reconstructor(cls, object, None)
    if not (isinstance(cls, type) and issubclass(cls, _Inert)) or base is not _ObjectBase or state is not None:
        raise BadMessage("pickle_refused", "the pickle rebuilds something other than lando's WorkRequest")
    return cls()


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("lando_messaging.workqueue", "WorkRequest"): _WorkRequest,
    ("lando_messaging.messaging", "StartJobPayload"): _StartJobPayload,
    ("lando_messaging.messaging", "RestartJobPayload"): _RestartJobPayload,
    ("lando_messaging.messaging", "CancelJobPayload"): _CancelJobPayload,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): _ObjectBase,
    ("builtins", "object"): _ObjectBase,
}


class _LandoUnpickler(pickle.Unpickler):
    """Admits lando's WorkRequest and its job payloads (as inert stand-ins) and plain data; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise BadMessage("pickle_refused",
                             f"the pickle refers to {_clip(module, 60)}.{_clip(name, 60)}, "
                             "which is not lando's WorkRequest; refused") from None

    def persistent_load(self, pid: Any) -> Any:
        raise BadMessage("pickle_refused", "the pickle uses persistent ids; refused")


def _parse_lando_pickle(body: bytes) -> Message:
    try:
        obj = _LandoUnpickler(io.BytesIO(body), encoding="utf-8", errors="strict").load()
    except BadMessage:
        raise
    except RecursionError:
        raise BadMessage("bad_pickle", "the pickle is nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - a broken pickle can fail in many ways; all mean "bad input"
        raise BadMessage("bad_pickle",
                         f"the message is not a readable pickle: {type(e).__name__}: {_clip(str(e))}") from None
    if not isinstance(obj, _WorkRequest):
        raise BadMessage("not_work_request",
                         f"the pickle holds a {_pickled_kind(obj)}, not lando's WorkRequest")
    if "command" not in obj.attrs:
        raise BadMessage("missing_command", "the WorkRequest has no command")
    command = _command(obj.attrs["command"])
    payload = obj.attrs.get("payload")
    if isinstance(payload, (_StartJobPayload, _RestartJobPayload, _CancelJobPayload)):
        fields = payload.attrs
    elif isinstance(payload, dict):
        fields = payload  # plain data: tolerated, same shape as our JSON payload
    else:
        raise BadMessage("bad_payload", f"the WorkRequest's payload is a {_pickled_kind(payload)}, "
                                        "not a job payload with a job_id")
    if "job_id" not in fields:
        raise BadMessage("missing_job_id", "the WorkRequest's payload has no job_id")
    return Message(command, _job_id(fields["job_id"]), None, "lando-pickle")


def _pickled_kind(obj: object) -> str:
    if isinstance(obj, _Inert):
        return obj.lando_name
    return "nothing" if obj is None else type(obj).__name__


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), f"a {type(value).__name__}")
    return f"{kind} ({_show(value)})" if isinstance(value, (bool, int, float, str)) else kind


def _show(value: object) -> str:
    return _clip(repr(value))


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
