"""Reading commands off the work queue: our JSON, lando's pickled WorkRequest, and hostile input."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lando_ssh.errors import BadInput
from lando_ssh.messages import MAX_JOB_ID, BadMessage, Command, Message, encode_message, parse_message

LIMIT = 65536


# ---- lando-messaging's classes, as lando_messaging/workqueue.py and messaging.py define them ----

class WorkRequest:
    def __init__(self, command, payload):
        self.command = command
        self.payload = payload


class StartJobPayload:
    def __init__(self, job_id):
        self.job_id = job_id


class RestartJobPayload:
    def __init__(self, job_id):
        self.job_id = job_id


class CancelJobPayload:
    def __init__(self, job_id):
        self.job_id = job_id


class WorkerStartedPayload:
    def __init__(self, worker_queue_name):
        self.worker_queue_name = worker_queue_name


@pytest.fixture
def lando_messaging(monkeypatch):
    """Install look-alikes of lando_messaging's modules so pickle writes exactly what lando wrote."""
    package = types.ModuleType("lando_messaging")
    workqueue = types.ModuleType("lando_messaging.workqueue")
    messaging = types.ModuleType("lando_messaging.messaging")
    for module, classes in ((workqueue, [WorkRequest]),
                            (messaging, [StartJobPayload, RestartJobPayload, CancelJobPayload, WorkerStartedPayload])):
        for cls in classes:
            monkeypatch.setattr(cls, "__module__", module.__name__)
            setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "lando_messaging", package)
    monkeypatch.setitem(sys.modules, "lando_messaging.workqueue", workqueue)
    monkeypatch.setitem(sys.modules, "lando_messaging.messaging", messaging)
    return types.SimpleNamespace(WorkRequest=WorkRequest, StartJobPayload=StartJobPayload,
                                 RestartJobPayload=RestartJobPayload, CancelJobPayload=CancelJobPayload,
                                 WorkerStartedPayload=WorkerStartedPayload)


#: What Python 2's pickle.dumps(WorkRequest('start_job', StartJobPayload(1))) writes (protocol 0).
PY2_START_JOB_1 = (b"ccopy_reg\n_reconstructor\np0\n(clando_messaging.workqueue\nWorkRequest\np1\n"
                   b"c__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\nS'command'\np6\nS'start_job'\np7\n"
                   b"sS'payload'\np8\ng0\n(clando_messaging.messaging\nStartJobPayload\np9\ng2\nNtp10\n"
                   b"Rp11\n(dp12\nS'job_id'\np13\nI1\nsbsb.")


# ---- the JSON wire format -------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(Command))
def test_each_command_round_trips_through_json(command):
    body = encode_message(command, 42)
    assert json.loads(body) == {"command": command.value, "payload": {"job_id": 42}, "version": "1"}
    assert parse_message(body, "application/json", LIMIT) == Message(command, 42, "1", "json")


def test_json_without_content_type_or_version_is_read():
    message = parse_message(b' {"command": "cancel_job", "payload": {"job_id": 7}} ', None, LIMIT)
    assert (message.command, message.job_id, message.version) == (Command.CANCEL_JOB, 7, None)


def test_json_with_charset_and_extra_keys_is_read():
    body = b'{"command": "restart_job", "payload": {"job_id": 9, "note": "x"}, "version": 2, "sender": "bespin"}'
    message = parse_message(body, "application/json; charset=utf-8", LIMIT)
    assert (message.command, message.job_id, message.version) == (Command.RESTART_JOB, 9, "2")


def test_a_bad_message_is_bad_input_with_a_reason_and_a_sentence():
    with pytest.raises(BadMessage) as caught:
        parse_message(b'{"command": "start_job", "payload": {"job_id": -3}}', None, LIMIT)
    assert isinstance(caught.value, BadInput)
    assert caught.value.reason == "job_id_out_of_range"
    assert "-3" in str(caught.value)


@pytest.mark.parametrize("job_id", [0, -1, True, "5x", 1.5, None, MAX_JOB_ID + 1])
def test_encode_refuses_a_job_id_a_consumer_would_refuse(job_id):
    with pytest.raises(BadMessage):
        encode_message("start_job", job_id)


def test_encode_refuses_an_unknown_command():
    with pytest.raises(BadMessage) as caught:
        encode_message("reboot", 1)
    assert caught.value.reason == "unknown_command"


def _job(job_id: object) -> bytes:
    return json.dumps({"command": "start_job", "payload": {"job_id": job_id}}).encode()


#: (body, content type, expected reason): each must be refused with exactly that reason.
JSON_CORPUS = [
    (b"", None, "empty"),
    (b"  \n\t ", None, "empty"),
    (b"{", None, "bad_json"),
    (b"start_job 5", None, "bad_json"),
    (b'{"command": "start_job", "payload": {"job_id": 1}', None, "bad_json"),
    (b'{"command": "start_job", "payload": {"job_id": NaN}}', None, "bad_json"),
    (b"[" * 100000 + b"]" * 100000, None, "bad_json"),
    (b"\xff\xfe{\x00}", None, "not_utf8"),
    (b"[1, 2]", None, "not_object"),
    (b'"start_job"', None, "not_object"),
    (b"null", None, "not_object"),
    (b"42", None, "not_object"),
    (b'{"payload": {"job_id": 1}}', None, "missing_command"),
    (b'{"command": "start_job"}', None, "missing_payload"),
    (b'{"command": "start_job", "payload": null}', None, "bad_payload"),
    (b'{"command": "start_job", "payload": [1]}', None, "bad_payload"),
    (b'{"command": "start_job", "payload": "job 1"}', None, "bad_payload"),
    (b'{"command": "start_job", "payload": {}}', None, "missing_job_id"),
    (b'{"command": "start_job", "payload": {"id": 1}}', None, "missing_job_id"),
    (b'{"command": "delete_all_jobs", "payload": {"job_id": 1}}', None, "unknown_command"),
    (b'{"command": "START_JOB", "payload": {"job_id": 1}}', None, "unknown_command"),
    (b'{"command": "worker_started", "payload": {"job_id": 1}}', None, "unknown_command"),
    (b'{"command": ["start_job"], "payload": {"job_id": 1}}', None, "bad_command"),
    (b'{"command": null, "payload": {"job_id": 1}}', None, "bad_command"),
    (_job(-1), None, "job_id_out_of_range"),
    (_job(0), None, "job_id_out_of_range"),
    (_job(2**64), None, "job_id_out_of_range"),
    (_job("5.0"), None, "bad_job_id"),
    (_job(" 5"), None, "bad_job_id"),
    (_job("5a"), None, "bad_job_id"),
    (_job("-5"), None, "bad_job_id"),
    (_job("\u0665"), None, "bad_job_id"),  # ARABIC-INDIC DIGIT FIVE: a digit to str.isdigit, not to bespin's URL
    (_job(""), None, "bad_job_id"),
    (_job("0"), None, "job_id_out_of_range"),
    (_job("9" * 25), None, "job_id_out_of_range"),
    (_job(5.0), None, "bad_job_id"),
    (_job(True), None, "bad_job_id"),
    (_job(None), None, "bad_job_id"),
    (_job({"id": 5}), None, "bad_job_id"),
    (b'{"command": "start_job", "payload": {"job_id": 1e400}}', None, "bad_job_id"),
    (b'{"command": "start_job", "payload": {"job_id": 1}, "version": ["1"]}', None, "bad_version"),
    (b'{"command": "start_job", "payload": {"job_id": 1}, "version": false}', None, "bad_version"),
    (b'{"command": "start_job", "payload": {"job_id": 1}}', "application/xml", "unsupported_content_type"),
    (b'{"command": "start_job", "payload": {"job_id": 1}}', "application/x-python-pickle", "bad_pickle"),
    (b'{"command": "start_job", "payload": {"job_id": "' + b"9" * LIMIT + b'"}}', None, "too_large"),
]


@pytest.mark.parametrize(("body", "content_type", "reason"), JSON_CORPUS,
                         ids=[f"{i}-{r}" for i, (_, _, r) in enumerate(JSON_CORPUS)])
def test_malformed_json_is_refused_with_its_reason(body, content_type, reason):
    max_bytes = LIMIT if reason == "too_large" else len(body) + 1
    with pytest.raises(BadMessage) as caught:
        parse_message(body, content_type, max_bytes)
    assert caught.value.reason == reason, str(caught.value)
    assert str(caught.value) and len(str(caught.value)) < 300


def test_the_size_limit_is_checked_before_anything_is_parsed():
    body = encode_message("start_job", 1)
    assert parse_message(body, None, len(body)).job_id == 1
    with pytest.raises(BadMessage) as caught:
        parse_message(body, None, len(body) - 1)
    assert caught.value.reason == "too_large"


# ---- lando-messaging's pickled WorkRequest ------------------------------------------------------

@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(("command", "payload_class"), [
    ("start_job", "StartJobPayload"), ("restart_job", "RestartJobPayload"), ("cancel_job", "CancelJobPayload")])
def test_landos_pickled_work_request_is_read_in_every_protocol(lando_messaging, protocol, command, payload_class):
    payload = getattr(lando_messaging, payload_class)(31)
    body = pickle.dumps(lando_messaging.WorkRequest(command, payload), protocol=protocol)
    message = parse_message(body, None, LIMIT)
    assert message == Message(Command(command), 31, None, "lando-pickle")


def test_a_work_request_written_by_python_2_is_read():
    assert parse_message(PY2_START_JOB_1, None, LIMIT) == Message(Command.START_JOB, 1, None, "lando-pickle")
    as_long = PY2_START_JOB_1.replace(b"I1\n", b"L123456789012L\n")
    assert parse_message(as_long, None, LIMIT).job_id == 123456789012


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_job_id_sent_as_a_string_of_digits_is_read_as_bespin_api_sends_it(lando_messaging, protocol):
    # bespin-api's views hand the URL's primary key, a string, to LandoJob: WorkRequest carries job_id='20'
    body = pickle.dumps(lando_messaging.WorkRequest("cancel_job", lando_messaging.CancelJobPayload("20")), protocol)
    assert parse_message(body, None, LIMIT) == Message(Command.CANCEL_JOB, 20, None, "lando-pickle")
    assert parse_message(_job("0042"), None, LIMIT).job_id == 42


def test_a_string_job_id_written_by_python_2_is_read():
    as_string = PY2_START_JOB_1.replace(b"I1\n", b"S'20'\n")
    assert parse_message(as_string, None, LIMIT) == Message(Command.START_JOB, 20, None, "lando-pickle")
    as_unicode = PY2_START_JOB_1.replace(b"I1\n", b"V\\u00e4\n")
    with pytest.raises(BadMessage, match="string of digits"):
        parse_message(as_unicode, None, LIMIT)


def test_a_work_request_with_a_plain_dict_payload_is_read(lando_messaging):
    body = pickle.dumps(lando_messaging.WorkRequest("cancel_job", {"job_id": 4}))
    assert parse_message(body, "application/x-python-pickle", LIMIT).job_id == 4


def test_a_work_request_is_read_without_lando_messaging_installed(lando_messaging, monkeypatch):
    body = pickle.dumps(lando_messaging.WorkRequest("start_job", lando_messaging.StartJobPayload(2)))
    for name in ("lando_messaging", "lando_messaging.workqueue", "lando_messaging.messaging"):
        monkeypatch.delitem(sys.modules, name)
    assert parse_message(body, None, LIMIT).job_id == 2
    assert "lando_messaging" not in sys.modules


class RunsCode:
    """A pickle that calls `func(*args)` when loaded."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def test_the_hostile_pickle_used_below_does_run_code_with_plain_pickle(marker):
    # the control: with pickle.loads this body creates the marker file
    pickle.loads(pickle.dumps(RunsCode(os.system, f"touch {marker}")))
    assert marker.exists()


def _hostile_corpus(marker: Path, lm: types.SimpleNamespace) -> list[tuple[str, bytes, str]]:
    touch = f"touch {marker}"
    start = lm.WorkRequest("start_job", lm.StartJobPayload(1))
    good = pickle.dumps(start, protocol=2)
    return [
        ("os.system", pickle.dumps(RunsCode(os.system, touch)), "pickle_refused"),
        ("os.system-protocol-0", f"cos\nsystem\n(S'{touch}'\ntR.".encode(), "pickle_refused"),
        ("posix.system-protocol-0", f"cposix\nsystem\n(S'{touch}'\ntR.".encode(), "pickle_refused"),
        ("subprocess.call", pickle.dumps(RunsCode(subprocess.call, ["touch", str(marker)])), "pickle_refused"),
        ("builtins.eval", pickle.dumps(RunsCode(eval, f"__import__('os').system({touch!r})")), "pickle_refused"),
        ("builtins.exec", pickle.dumps(RunsCode(exec, f"open({str(marker)!r}, 'w')")), "pickle_refused"),
        ("builtins.__import__", pickle.dumps(RunsCode(__import__, "os")), "pickle_refused"),
        ("payload-runs-code", pickle.dumps(lm.WorkRequest("start_job", RunsCode(os.system, touch))), "pickle_refused"),
        ("command-runs-code", pickle.dumps(lm.WorkRequest(RunsCode(os.system, touch), lm.StartJobPayload(1))),
         "pickle_refused"),
        ("nested-in-attribute",
         pickle.dumps(lm.WorkRequest("start_job", {"job_id": 1, "x": RunsCode(os.system, touch)})), "pickle_refused"),
        ("other-lando-class", pickle.dumps(lm.WorkRequest("worker_started", lm.WorkerStartedPayload("q"))),
         "pickle_refused"),
        ("reconstructor-other-base", b"ccopy_reg\n_reconstructor\n(clando_messaging.workqueue\nWorkRequest\n"
                                     b"c__builtin__\nint\nI0\ntR.", "pickle_refused"),
        ("reconstructor-with-state", b"ccopy_reg\n_reconstructor\n(clando_messaging.workqueue\nWorkRequest\n"
                                     b"c__builtin__\nobject\nS'x'\ntR.", "pickle_refused"),
        ("reconstructor-wrong-class", b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\n"
                                      b"c__builtin__\nobject\nNtR.", "pickle_refused"),
        ("persistent-id", b"\x80\x04P0\n.", "pickle_refused"),
        ("state-not-a-dict", b"\x80\x02clando_messaging.workqueue\nWorkRequest\n)\x81]b.", "bad_pickle"),
        ("truncated", good[: len(good) // 2], "bad_pickle"),
        ("garbage-after-proto", b"\x80\x04\xff\xff\xff", "bad_pickle"),
        ("pickled-dict", pickle.dumps({"command": "start_job", "payload": {"job_id": 1}}), "not_work_request"),
        ("pickled-list", pickle.dumps(["start_job", 1]), "not_work_request"),
        ("pickled-payload-alone", pickle.dumps(lm.StartJobPayload(1)), "not_work_request"),
        ("unknown-command", pickle.dumps(lm.WorkRequest("stage_job_complete", lm.StartJobPayload(1))),
         "unknown_command"),
        ("no-command", pickle.dumps(lm.StartJobPayload(1), protocol=0).replace(
            b"lando_messaging.messaging\nStartJobPayload", b"lando_messaging.workqueue\nWorkRequest"),
         "missing_command"),
        ("payload-none", pickle.dumps(lm.WorkRequest("start_job", None)), "bad_payload"),
        ("payload-string", pickle.dumps(lm.WorkRequest("start_job", "1")), "bad_payload"),
        ("payload-without-job-id", pickle.dumps(lm.WorkRequest("start_job", {})), "missing_job_id"),
        ("job-id-not-digits", pickle.dumps(lm.WorkRequest("start_job", lm.StartJobPayload("7 OR 1=1"))), "bad_job_id"),
        ("job-id-negative", pickle.dumps(lm.WorkRequest("start_job", lm.StartJobPayload(-7))), "job_id_out_of_range"),
        ("job-id-huge", pickle.dumps(lm.WorkRequest("start_job", lm.StartJobPayload(10**20000))),
         "job_id_out_of_range"),
    ]


def test_hostile_and_malformed_pickles_are_refused_and_run_nothing(lando_messaging, marker):
    corpus = _hostile_corpus(marker, lando_messaging)
    assert len(corpus) >= 20
    wrong = []
    for name, body, reason in corpus:
        try:
            message = parse_message(body, None, LIMIT)
        except BadMessage as e:
            if e.reason != reason:
                wrong.append(f"{name}: {e.reason} ({e}), expected {reason}")
        else:
            wrong.append(f"{name}: accepted as {message}")
    assert wrong == []
    assert not marker.exists(), "a refused pickle ran code"
