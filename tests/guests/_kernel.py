"""Kernel artefact helpers: unpack ``vmlinux`` from a bzImage, strip module signatures.

Why: under TCG every instruction is emulated, so the in-guest decompressor of a
bzImage and the RSA check of each signed module are real seconds of boot time.
Booting the uncompressed ELF ``vmlinux`` directly (QEMU's PVH entry) and loading
unsigned modules roughly halves the time until the agent answers (guests.md).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator

_ELF_MAGIC = b"\x7fELF"
_SIG_MAGIC = b"~Module signature appended~\n"
# struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], be32 sig_len
_SIG_STRUCT = struct.Struct(">BBBBB3xI")


def _gunzip(blob: bytes) -> bytes:
    # wbits=16+MAX_WBITS: gzip container; decompressobj stops at the end of the
    # stream and ignores the trailing bytes a bzImage has after the payload.
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob)


def _unxz(blob: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob)


def _unlzma(blob: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(blob)


def _bunzip2(blob: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(blob)


# The same signatures scripts/extract-vmlinux searches for (those the stdlib can
# decompress; zstd/lz4/lzo kernels fall back to bzImage boot).
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
    (b"\x1f\x8b\x08", _gunzip),
    (b"\xfd7zXZ\x00", _unxz),
    (b"BZh", _bunzip2),
    (b"\x5d\x00\x00\x00", _unlzma),
)


def _payload_from_header(bzimage: bytes) -> bytes | None:
    """The compressed payload located by the x86 boot protocol header (>= 2.08)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    (version,) = struct.unpack_from("<H", bzimage, 0x206)
    if version < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return bzimage[start : start + length]


def _candidates(bzimage: bytes) -> Iterator[bytes]:
    payload = _payload_from_header(bzimage)
    if payload is not None:
        yield payload
    # extract-vmlinux's brute force: try every occurrence of every magic.
    for magic, _ in _DECOMPRESSORS:
        pos = bzimage.find(magic)
        while pos != -1:
            yield bzimage[pos:]
            pos = bzimage.find(magic, pos + 1)


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """Return the uncompressed ELF kernel inside ``bzimage``, or None if not found."""
    for blob in _candidates(bzimage):
        for magic, decompress in _DECOMPRESSORS:
            if not blob.startswith(magic):
                continue
            try:
                out = decompress(blob)
            except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
                continue
            if out.startswith(_ELF_MAGIC):
                return out
    return None


def strip_module_signature(module: bytes) -> bytes:
    """Drop the PKCS#7 signature appended to a ``.ko`` (a no-op for unsigned ones).

    The kernel (CONFIG_MODULE_SIG without _FORCE) loads unsigned modules and only
    taints itself, while verifying a signature costs an emulated RSA operation.
    """
    if not module.endswith(_SIG_MAGIC):
        return module
    end = len(module) - len(_SIG_MAGIC)
    info_start = end - _SIG_STRUCT.size
    _algo, _hash, _id_type, signer_len, key_id_len, sig_len = _SIG_STRUCT.unpack_from(
        module, info_start
    )
    body_end = info_start - sig_len - signer_len - key_id_len
    if body_end <= 0 or not module.startswith(_ELF_MAGIC):
        raise ValueError("malformed module signature")
    return module[:body_end]


def decompress_module(path_name: str, data: bytes) -> bytes:
    """Modules may ship compressed (.ko.xz/.gz/.zst); insmod in busybox wants plain ELF."""
    if path_name.endswith(".ko"):
        return data
    if path_name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path_name.endswith(".ko.gz"):
        return gzip.decompress(data)
    raise ValueError(f"unsupported module compression: {path_name}")
