"""Numbers for people: ages, countdowns, latencies, sizes and rates. Pure functions."""

from __future__ import annotations

import math

__all__ = [
    "format_age",
    "format_bytes",
    "format_countdown",
    "format_drift",
    "format_latency",
    "format_rate",
    "sparkline",
]

_SPARK = "▁▂▃▄▅▆▇█"


def format_age(seconds: float | None) -> str:
    """`3s`, `5m`, `2h`, `4d`; `—` when never."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def format_countdown(seconds: float) -> str:
    """`0:47`, `12:03`, `1:02:03`; never negative."""
    s = max(0, math.ceil(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}:{m:02d}:{sec:02d}"
    return f"{m}:{sec:02d}"


def format_latency(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def format_bytes(n: float | None) -> str:
    """Decimal units, three significant figures: `412 KB`, `32.1 GB`."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.0f} PB"  # pragma: no cover - loop always returns


def format_rate(bytes_per_s: float | None) -> str:
    if bytes_per_s is None:
        return "—"
    return format_bytes(bytes_per_s) + "/s"


def format_drift(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if abs(seconds) < 60:
        return f"{seconds:+.1f} s"
    return f"{seconds / 60:+.1f} min"


def sparkline(values: list[float], width: int = 16) -> str:
    """Unicode block sparkline of the last `width` values, scaled to their maximum."""
    tail = values[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return _SPARK[0] * len(tail)
    last = len(_SPARK) - 1
    return "".join(
        _SPARK[min(last, int(v / top * last + 0.5))] if v > 0 else _SPARK[0] for v in tail
    )
