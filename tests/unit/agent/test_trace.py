"""Channel traces (--debug): what a channel carried, secrets and payloads masked."""

from __future__ import annotations

import base64
import logging

import pytest

from qgadash.agent.codec import encode_request
from qgadash.agent.trace import TracingStream, mask_reply


class Recorded:
    """An in-memory ByteStream: what was written, and replies to read."""

    def __init__(self, replies: list[bytes]) -> None:
        self.written = b""
        self.replies = replies

    async def read(self, n: int) -> bytes:
        return self.replies.pop(0) if self.replies else b""

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def _password_request() -> bytes:
    secret = base64.b64encode(b"hunter2").decode()
    args = {"username": "root", "password": secret, "crypted": False}
    return encode_request("guest-set-user-password", args, id=7)


async def test_requests_are_logged_with_secrets_masked_and_bytes_passed_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = Recorded([])
    stream = TracingStream(inner, "pve1/db")
    data = b"\xff" + _password_request() + encode_request("guest-ping", None, id=8)
    with caplog.at_level(logging.DEBUG, logger="qgadash.channel"):
        stream.write(data)
    assert inner.written == data  # the agent gets the real bytes
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "pve1/db -> 0xFF"
    assert '"password":"***"' in lines[1] and '"username":"root"' in lines[1]
    assert base64.b64encode(b"hunter2").decode() not in "".join(lines)
    assert lines[2] == 'pve1/db -> {"execute":"guest-ping","id":8}'


async def test_replies_are_logged_per_line_with_payloads_as_lengths(
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = base64.b64encode(b"the guest's secret output").decode()
    reply = b'{"return": {"exited": true, "out-data": "%s"}, "id": 3}\n' % output.encode()
    chunks = [reply[:20], reply[20:] + b'\xff{"return": 5}\n', b"xy"]
    stream = TracingStream(Recorded(chunks), "v")
    with caplog.at_level(logging.DEBUG, logger="qgadash.channel"):
        received = await stream.read(100) + await stream.read(100) + await stream.read(100)
        assert await stream.read(100) == b""
    assert received == reply + b'\xff{"return": 5}\nxy'
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f'v <- {{"return": {{"exited": true, "out-data": "<{len(output)} chars>"}}, "id": 3}}',
        "v <- 0xFF",
        'v <- {"return": 5}',
        "v <- 2 bytes with no newline",
        "v <- end of stream",
    ]


def test_a_long_reply_is_cut_and_its_size_given() -> None:
    line = b'{"return": "' + b"x" * 5000 + b'"}'
    text = mask_reply(line)
    assert len(text) < 500 and text.endswith(f"… ({len(line)} bytes)")
