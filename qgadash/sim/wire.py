"""The agent's side of the wire: QEMU's JSON streamer, and replies encoded as QEMU does.

`RequestStream` reproduces qemu-ga's request parsing (QEMU's json-lexer, json-streamer
and json-parser) closely enough that clients see the same replies to the same bytes:

- a raw byte stream, no framing; each complete top-level value is one request;
- a byte the lexer rejects (0xFF, a control character, a stray letter) gives
  `JSON parse error, stray '...'` and the lexer skips to the next structural character;
- a half-sent token is held until more bytes come (even across clients, as the real
  agent does);
- QEMU's extensions (single-quoted strings, `\\'`) and its limits (nesting 1024, tokens
  64 MiB) with the same error texts.

The common case (a whole ASCII object in the buffer) goes through the C JSON decoder; the
exact token-by-token path handles everything else.

Over 500 lines on purpose: QEMU's JSON lexer and streamer are reproduced as one state
machine, byte for byte (that is what makes the simulator's parsing errors the real
agent's); split, each half would need the other's states.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

__all__ = ["JsonError", "QFloat", "RequestStream", "dumps"]

MAX_TOKEN_SIZE: Final = 64 << 20
MAX_TOKEN_COUNT: Final = 2 << 20
MAX_NESTING: Final = 1 << 10


@dataclass(frozen=True, slots=True)
class JsonError:
    """A request the agent could not parse; answered with a GenericError and no id."""

    desc: str


# Token types, as in QEMU's json-lexer.h.
_LCURLY, _RCURLY, _LSQUARE, _RSQUARE, _COLON, _COMMA = range(6)
_INTEGER, _FLOAT, _KEYWORD, _STRING = range(6, 10)

_STRUCTURAL: Final = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(":"): _COLON,
    ord(","): _COMMA,
}
_WS = re.compile(rb"[ \t\r\n]*")
_DQ_BODY = re.compile(rb'(?:[^"\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*')
_SQ_BODY = re.compile(rb"(?:[^'\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_KEYWORD_RE = re.compile(rb"[a-z]+")
_RECOVERY = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")
_DIGITS = frozenset(b"0123456789")
_NONCHARACTER = re.compile(
    "[\ufdd0-\ufdef\ufffe\uffff"
    + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(1, 17))
    + "]"
)
_SIMPLE_ESCAPES: Final = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")

_Token = tuple[int, bytes]
_Result = object  # a parsed request (any JSON value) or a JsonError


def _qemu_int(text: str) -> int | float:
    """QEMU keeps integers that fit int64 or uint64 and turns the rest into doubles."""
    value = int(text)
    if -(1 << 63) <= value < (1 << 64):
        return value
    return float(text)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey
    return result


_FAST_DECODER = json.JSONDecoder(
    parse_int=_qemu_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_no_duplicates,
)
_FAST_LIMIT = 1 << 20


class RequestStream:
    """Bytes in, requests out: `feed(data)` returns parsed values and `JsonError`s in order.

    One per agent (not per connection): like the real agent, a half-sent request from one
    client is completed by the bytes of the next.
    """

    __slots__ = ("_brace", "_bracket", "_buf", "_recovering", "_scan", "_token_size", "_tokens")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan = 0  # how far a pending string token has been checked
        self._recovering = False
        self._tokens: list[_Token] = []
        self._brace = 0
        self._bracket = 0
        self._token_size = 0

    def reset(self) -> None:
        """Forget everything buffered (a restarted agent)."""
        self._buf = bytearray()
        self._scan = 0
        self._recovering = False
        self._tokens = []
        self._brace = self._bracket = 0
        self._token_size = 0

    @property
    def idle(self) -> bool:
        return not self._buf and not self._tokens and not self._recovering

    def feed(self, data: bytes) -> list[_Result]:
        out: list[_Result] = []
        buf = self._buf
        buf += data
        end = len(buf)
        pos = 0
        text: str | None = None
        fast = end < _FAST_LIMIT and buf.isascii()
        if fast:
            text = buf.decode("ascii")
            fast = "'" not in text and "\\u" not in text
        while pos < end:
            if self._recovering:
                pos = _RECOVERY.match(buf, pos).end()  # type: ignore[union-attr]
                if pos == end:
                    break
                self._recovering = False
            pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
            if pos == end:
                break
            ch = buf[pos]
            if fast and ch == 0x7B and not self._tokens and text is not None:
                try:
                    value, stop = _FAST_DECODER.raw_decode(text, pos)
                except (ValueError, RecursionError):
                    fast = False  # incomplete or unusual: take the exact path from here
                else:
                    out.append(value)
                    pos = stop
                    continue
            kind = _STRUCTURAL.get(ch)
            if kind is not None:
                self._token(kind, bytes(buf[pos : pos + 1]), out)
                pos += 1
                continue
            if ch == 0x22 or ch == 0x27:
                body = _DQ_BODY if ch == 0x22 else _SQ_BODY
                stop = body.match(buf, max(pos + 1, self._scan)).end()  # type: ignore[union-attr]
                if stop == end or (buf[stop] == 0x5C and stop + 1 == end):
                    self._scan = stop  # wait for the rest of the string
                    break
                self._scan = 0
                if buf[stop] == ch:
                    self._token(_STRING, bytes(buf[pos : stop + 1]), out)
                else:  # control character, 0xFE/0xFF, or a bad byte after a backslash
                    extra = 2 if buf[stop] == 0x5C else 1
                    self._error(bytes(buf[pos : stop + extra]), out)
                pos = stop + (2 if buf[stop] == 0x5C else 1)
                continue
            if ch == 0x2D or ch in _DIGITS:
                took = self._number(buf, pos, end, out)
                if took < 0:
                    break
                pos = took
                continue
            if 0x61 <= ch <= 0x7A:
                stop = _KEYWORD_RE.match(buf, pos).end()  # type: ignore[union-attr]
                if stop == end:
                    break
                self._token(_KEYWORD, bytes(buf[pos:stop]), out)
                pos = stop
                continue
            self._error(bytes(buf[pos : pos + 1]), out)
            pos += 1
        del buf[:pos]
        if self._scan:
            self._scan -= pos
        if len(buf) > MAX_TOKEN_SIZE:  # one token may not grow without bound
            buf.clear()
            self._scan = 0
            self._emit_error("JSON token size limit exceeded", out)
        return out

    def _number(self, buf: bytearray, pos: int, end: int, out: list[_Result]) -> int:
        """Lex a number at `pos`; returns the next position, or -1 to wait for more bytes."""
        match = _NUMBER.match(buf, pos)
        if match is None:  # "-" not followed by a digit
            if pos + 1 == end:
                return -1
            self._error(bytes(buf[pos : pos + 2]), out)
            return pos + 2
        stop = match.end()
        if stop == end:
            return -1
        token = match.group()
        nxt = buf[stop]
        has_frac = b"." in token
        has_exp = b"e" in token or b"E" in token
        if nxt in _DIGITS:  # only after a leading zero: "01"
            self._error(bytes(buf[pos : stop + 1]), out)
            return stop + 1
        if nxt == 0x2E and not has_frac and not has_exp:  # "1." then no digit
            if stop + 1 == end:
                return -1
            self._error(bytes(buf[pos : stop + 2]), out)
            return stop + 2
        if nxt in b"eE" and not has_exp:
            after = stop + 1
            if after < end and buf[after] in b"+-":
                after += 1
            if after == end:
                return -1
            self._error(bytes(buf[pos : after + 1]), out)
            return after + 1
        self._token(_FLOAT if has_frac or has_exp else _INTEGER, bytes(token), out)
        return stop

    def _error(self, token: bytes, out: list[_Result]) -> None:
        stray = token.decode("utf-8", "replace")
        self._emit_error(f"JSON parse error, stray '{stray}'", out)
        self._recovering = True

    def _emit_error(self, desc: str, out: list[_Result]) -> None:
        self._tokens = []
        self._brace = self._bracket = 0
        self._token_size = 0
        out.append(JsonError(desc))

    def _token(self, kind: int, token: bytes, out: list[_Result]) -> None:
        if kind == _LCURLY:
            self._brace += 1
        elif kind == _RCURLY:
            self._brace -= 1
        elif kind == _LSQUARE:
            self._bracket += 1
        elif kind == _RSQUARE:
            self._bracket -= 1
        if self._token_size + len(token) + 1 > MAX_TOKEN_SIZE:
            self._emit_error("JSON token size limit exceeded", out)
            return
        if len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            self._emit_error("JSON token count limit exceeded", out)
            return
        if self._brace + self._bracket > MAX_NESTING:
            self._emit_error("JSON nesting depth limit exceeded", out)
            return
        self._tokens.append((kind, token))
        self._token_size += len(token)
        if (self._brace > 0 or self._bracket > 0) and self._brace >= 0 and self._bracket >= 0:
            return
        tokens = self._tokens
        self._tokens = []
        self._brace = self._bracket = 0
        self._token_size = 0
        out.append(_parse(tokens))


class _Fail(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _parse(tokens: list[_Token]) -> _Result:
    try:
        return _Parser(tokens).parse()
    except _Fail as fail:
        return JsonError(f"JSON parse error, {fail.message}")


class _Parser:
    """QEMU's recursive-descent json-parser, written with an explicit stack."""

    __slots__ = ("i", "tokens")

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def _pop(self) -> _Token:
        if self.i >= len(self.tokens):
            raise _Fail("premature EOI")
        token = self.tokens[self.i]
        self.i += 1
        return token

    def _peek(self) -> _Token:
        if self.i >= len(self.tokens):
            raise _Fail("premature EOI")
        return self.tokens[self.i]

    def parse(self) -> object:
        # Each frame: [container, key-or-None, is_key_slot]
        stack: list[list[object]] = []
        while True:
            value, opened = self._value()
            if opened is not None:
                stack.append(opened)
                continue
            # a scalar or a closed container: attach it to its parent
            while True:
                if not stack:
                    return value
                frame = stack[-1]
                container = frame[0]
                if frame[2]:  # the value was parsed in a key position
                    if not isinstance(value, str):
                        raise _Fail("key is not a string in object")
                    frame[1] = value
                    frame[2] = False
                    if self._pop()[0] != _COLON:
                        raise _Fail("missing : in object pair")
                    break  # now parse the member's value
                if isinstance(container, list):
                    container.append(value)
                    kind = self._pop()[0]
                    if kind == _RSQUARE:
                        stack.pop()
                        value = container
                        continue
                    if kind != _COMMA:
                        raise _Fail("expected separator in list")
                    break
                assert isinstance(container, dict)
                key = frame[1]
                assert isinstance(key, str)
                if key in container:
                    raise _Fail("duplicate key")
                container[key] = value
                kind = self._pop()[0]
                if kind == _RCURLY:
                    stack.pop()
                    value = container
                    continue
                if kind != _COMMA:
                    raise _Fail("expected separator in dict")
                frame[2] = True
                break

    def _value(self) -> tuple[object, list[object] | None]:
        kind, text = self._peek()
        if kind == _LCURLY:
            self.i += 1
            if self._peek()[0] == _RCURLY:
                self.i += 1
                return {}, None
            return None, [{}, None, True]
        if kind == _LSQUARE:
            self.i += 1
            if self._peek()[0] == _RSQUARE:
                self.i += 1
                return [], None
            return None, [[], None, False]
        self.i += 1
        if kind == _STRING:
            return _parse_string(text), None
        if kind == _INTEGER:
            value = int(text)
            if -(1 << 63) <= value < (1 << 64):
                return value, None
            return float(text), None
        if kind == _FLOAT:
            return float(text), None
        if kind == _KEYWORD:
            if text == b"true":
                return True, None
            if text == b"false":
                return False, None
            if text == b"null":
                return None, None
            raise _Fail(f"invalid keyword '{text.decode('ascii')}'")
        raise _Fail("expecting value")


def _check_segment(raw: bytes) -> str:
    try:
        decoded = raw.replace(b"\xc0\x80", b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise _Fail("invalid UTF-8 sequence in string") from None
    if _NONCHARACTER.search(decoded):
        raise _Fail("invalid UTF-8 sequence in string")
    return decoded


def _hex4(data: bytes, at: int) -> int:
    chunk = data[at : at + 4]
    if len(chunk) < 4 or any(c not in _HEX for c in chunk):
        return -1
    return int(chunk, 16)


def _valid_codepoint(cp: int) -> bool:
    if cp < 0 or cp > 0x10FFFF:
        return False
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= cp <= 0xDFFF


def _parse_string(token: bytes) -> str:
    body = token[1:-1]
    if b"\\" not in body:
        return _check_segment(body)
    parts: list[str] = []
    pos = 0
    while True:
        slash = body.find(b"\\", pos)
        if slash < 0:
            parts.append(_check_segment(body[pos:]))
            return "".join(parts)
        parts.append(_check_segment(body[pos:slash]))
        code = body[slash + 1]
        simple = _SIMPLE_ESCAPES.get(code)
        if simple is not None:
            parts.append(simple)
            pos = slash + 2
            continue
        if code != ord("u"):
            raise _Fail("invalid escape sequence in string")
        cp = _hex4(body, slash + 2)
        pos = slash + 6
        if 0xD800 <= cp <= 0xDBFF and body[pos : pos + 2] == b"\\u":
            trailing = _hex4(body, pos + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                pos += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            shown = body[slash:pos].decode("utf-8", "replace")
            raise _Fail(f"{shown} is not a valid Unicode character")
        parts.append(chr(cp))


# --- replies ---------------------------------------------------------------------------


class QFloat:
    """A float the agent prints as QEMU does (`%.17g`: 0.1 -> 0.10000000000000001)."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value


_FLOAT_MARK = "\ue000"
_FLOAT_MARK_ESCAPED = "\\ue000"
_FLOAT_RE = re.compile(r'"\\ue000([^"\\]*)\\ue000"')
_UESCAPE_RE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")


def _default(obj: object) -> object:
    if isinstance(obj, QFloat):
        return f"{_FLOAT_MARK}{obj.value:.17g}{_FLOAT_MARK}"
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, tuple | frozenset):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _upper_escape(match: re.Match[str]) -> str:
    return match.group(1) + "\\u" + match.group(2).upper()


def dumps(obj: object) -> str:
    """JSON text as qemu-ga writes it: `{"return": {}, "id": 1}` style separators,
    non-ASCII and control characters as upper-case `\\uXXXX`, floats as `%.17g`."""
    text = json.dumps(obj, default=_default, check_circular=False)
    if "\\u" in text:
        if _FLOAT_MARK_ESCAPED in text:
            text = _FLOAT_RE.sub(r"\1", text)
        text = _UESCAPE_RE.sub(_upper_escape, text)
    return text


def wrap_floats(value: object) -> object:
    """A request id with floats in it, made printable the QEMU way."""
    if isinstance(value, float):
        return QFloat(value)
    if isinstance(value, list):
        return [wrap_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: wrap_floats(v) for k, v in value.items()}
    return value
