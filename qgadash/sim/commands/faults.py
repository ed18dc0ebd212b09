"""Faults that change the bytes of a reply or the strings of a profile: garbage,
floods, oversize and endless replies, invalid UTF-8, out-of-range values."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from qgadash.sim.profiles import GuestProfile

GARBAGE = (
    b"<html><body><h1>502 Bad Gateway</h1></body></html>\r\n",
    b"\x00\x01\x02\x03\x04\x05binary\x80\x81\n",
    b"ERROR: agent crashed\n",
    b"}{][:,\n",
    b"return 42\n",
)
_INVALID_MARK = "\ue001"
INVALID_MARK_JSON = b"\\uE001"
INVALID_BYTES = b"\xff\xfe\xc0\xaf\xed\xa0\x80\x80bad"
FF_FLOOD = b"\xff" * 65536
_DEEP = 100_000
_OVERSIZE_BYTES = 17 << 20
_HUGE_BYTES = 100_000_000
_CHUNK = 1 << 20


def oversize_reply(rid: str) -> Iterator[bytes]:
    yield b'{"return": {"host-name": "'
    chunk = b"x" * _CHUNK
    for _ in range(_OVERSIZE_BYTES // _CHUNK):
        yield chunk
    yield f'"}}{rid}}}\n'.encode()


def huge_reply(rid: str) -> Iterator[bytes]:
    entry = b'{"name": "eth0", "hardware-address": "52:54:00:12:34:56"}, '
    per_chunk = _CHUNK // len(entry)
    chunk = entry * per_chunk
    yield b'{"return": ['
    sent = 0
    while sent < _HUGE_BYTES:
        yield chunk
        sent += len(chunk)
    yield f'{{"name": "last"}}]{rid}}}\n'.encode()


def endless() -> Iterator[bytes]:
    yield b'{"return": "'
    chunk = b"A" * 65536
    while True:
        yield chunk


def deep_reply(rid: str) -> bytes:
    return b'{"return": ' + b"[" * _DEEP + b"]" * _DEEP + f"{rid}}}\n".encode()


def mark_invalid(profile: GuestProfile) -> GuestProfile:
    """Mark free-text strings; the encoder swaps the mark for invalid UTF-8 bytes."""

    def mark(text: str) -> str:
        return text + _INVALID_MARK

    os_info = dataclasses.replace(
        profile.os,
        name=mark(profile.os.name),
        pretty_name=mark(profile.os.pretty_name),
        kernel_release=mark(profile.os.kernel_release),
    )
    return dataclasses.replace(
        profile,
        hostname=mark(profile.hostname),
        os=os_info,
        interfaces=tuple(
            dataclasses.replace(nic, name=mark(nic.name)) for nic in profile.interfaces
        ),
        filesystems=tuple(
            dataclasses.replace(fs, mountpoint=mark(fs.mountpoint)) for fs in profile.filesystems
        ),
        timezone=mark(profile.timezone or "UTC"),
    )


def out_of_range(command: str, value: object) -> object:
    """Replies a careless client would trust: impossible numbers and wrong types."""
    huge = 2**80
    if command == "guest-get-fsinfo" and isinstance(value, list):
        return [dict(fs, **{"used-bytes": -5, "total-bytes": huge}) for fs in value] + [
            {
                "name": 42,
                "mountpoint": None,
                "type": ["ext4"],
                "used-bytes": "NaN",
                "total-bytes": "Infinity",
                "disk": "vda",
            }
        ]
    if command == "guest-network-get-interfaces" and isinstance(value, list):
        return [
            {
                "name": "eth0",
                "hardware-address": 525400123456,
                "ip-addresses": [
                    {"ip-address-type": "ipv5", "ip-address": "999.1.1.1", "prefix": 999},
                    {"ip-address-type": "ipv4", "ip-address": None, "prefix": -1},
                ],
                "statistics": {
                    "rx-bytes": "NaN",
                    "tx-bytes": -1,
                    "rx-packets": huge,
                    "tx-packets": 1.5e308,
                    "rx-errs": "0",
                    "tx-errs": None,
                    "rx-dropped": -huge,
                    "tx-dropped": True,
                },
            },
            {"name": None, "ip-addresses": "none"},
            "not-an-object",
        ]
    if command == "guest-get-host-name":
        return {"host-name": 12345}
    if command == "guest-get-osinfo":
        return {
            "id": None,
            "name": ["Linux"],
            "pretty-name": 7,
            "version": {"major": 1},
            "kernel-release": -1,
            "machine": True,
        }
    if command == "guest-get-users":
        return [{"user": None, "login-time": "yesterday"}, {"user": "x", "login-time": -huge}]
    if command == "guest-get-timezone":
        return {"zone": 0, "offset": huge}
    if command == "guest-get-time":
        return -1
    if command == "guest-get-load":
        return {"load1m": "NaN", "load5m": -1, "load15m": huge}
    if command == "guest-fsfreeze-status":
        return "melting"
    if command == "guest-get-vcpus":
        return [{"logical-id": "x", "online": "yes"}]
    if command == "guest-file-read":
        return {"count": huge, "buf-b64": "!!!not base64!!!", "eof": "maybe"}
    if command == "guest-exec-status":
        return {"exited": "true", "exitcode": huge, "out-data": 17}
    if command == "guest-exec":
        return {"pid": -huge}
    if command in ("guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-fsfreeze-freeze-list"):
        return -huge
    if command == "guest-get-disks":
        return [{"name": None, "partition": "no"}]
    return value
