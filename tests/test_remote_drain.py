"""Reading a command's output waits on its channel's descriptor whatever its number: a daemon driving
hundreds of jobs holds descriptors above 1023, which select() cannot watch."""
from __future__ import annotations

import os
import threading

from lando_ssh.remote import _drain


class PipeChannel:
    """What _drain needs of a paramiko Channel, over a pipe whose read end is descriptor `fd`."""

    def __init__(self, fd: int):
        read, self.write = os.pipe()
        os.dup2(read, fd)
        os.close(read)
        self.fd = fd
        self.data = bytearray()
        self.done = threading.Event()
        self.status_event = threading.Event()
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def send(self, data: bytes, end: bool = False) -> None:
        self.data += data
        if end:
            self.done.set()
        os.write(self.write, b"x")  # paramiko's event pipe: readable when there is something to read

    def recv_ready(self) -> bool:
        return bool(self.data)

    def recv(self, n: int) -> bytes:
        os.read(self.fd, 1)
        chunk, self.data[:] = bytes(self.data[:n]), self.data[n:]
        return chunk

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return self.done.is_set() and not self.data

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.write)


def test_output_is_read_from_a_channel_whose_descriptor_is_above_1023():
    chan = PipeChannel(1500)
    try:
        threading.Timer(0.05, chan.send, (b"hello from a busy daemon\n", True)).start()
        out, err = _drain(chan, timeout=30)  # type: ignore[arg-type]
        assert (out, err) == (b"hello from a busy daemon\n", b"")
    finally:
        chan.close()
