"""Addresses as hosts.toml writes them: `tcp:HOST:PORT` agents and `[user@]host[:port]`
SSH targets. Plain parsing, no network and no asyncssh, so the configuration can check
them (a bad port is a config error naming file, table and key, not a traceback).
"""

from __future__ import annotations

__all__ = ["parse_ssh_spec", "parse_tcp_address"]


def parse_tcp_address(address: str) -> tuple[str, int] | None:
    """`tcp:HOST:PORT` (HOST may be `[v6]`), else None."""
    if not address.startswith("tcp:"):
        return None
    host, _, port = address[4:].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not tcp:HOST:PORT")
    return host, int(port)


def parse_ssh_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (host may be `[v6]` or a bare v6 address) → (user, host, port).

    A missing user or port is None, so ~/.ssh/config (User, Port) or the defaults apply.
    """
    text = spec.strip()
    user: str | None = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ValueError(f"ssh target {spec!r}: empty user name before '@'")
    port_text = ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"ssh target {spec!r}: expected [ADDRESS]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a name, or an IPv6 address without a port
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"ssh target {spec!r}: no host name")
    port: int | None = None
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"ssh target {spec!r}: port must be 1-65535, not {port_text!r}")
        port = int(port_text)
    return user, host, port
