"""Walk a GGUF file's header: metadata key/values and the tensor table, without loading weights.

`gguf.GGUFReader` also parses every tokenizer array into numpy objects, which takes seconds (3 s quiet,
18 s on a busy 2-core machine) for a 50k-token vocabulary; garrison needs scalars, array lengths, the
tensor table and, at most, the token strings.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_SHORT = 64  # string arrays up to this length (languages, tags) are always decoded


@dataclass(frozen=True)
class GgufArray:
    """An array value: its element type and length (elements are skipped, not decoded)."""

    type: int
    length: int


@dataclass(frozen=True)
class GgufHeader:
    """The metadata key/values and the tensor table of a GGUF file."""

    metadata: dict[str, Any]
    tensors: list[tuple[str, int, int]]  # (name, elements, bytes)
    layout: list[tuple[str, int, list[int]]] = field(default_factory=list)  # (name, ggml type, dims)


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def count(self, length: int, item_bytes: int = 1) -> int:
        """A length read from the file, refused when that many items cannot fit in what is left of it."""
        if length * item_bytes > len(self.buf) - self.pos:
            raise ValueError(f"truncated or corrupt header (a length of {length} at byte {self.pos})")
        return length

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.count(self.unpack("<Q"))
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.count(self.unpack("<Q"))
        self.pos += length

    def value(self, kind: int, *, strings: bool = False) -> Any:
        """The next value of type `kind`; arrays of strings are decoded only when `strings` or short."""
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            element, length = self.unpack("<I"), self.count(self.unpack("<Q"))
            if element in _SCALARS:
                fmt = _SCALARS[element]
                size, start = struct.calcsize(fmt), self.pos
                self.pos += size * length
                if length > 4096:  # tokenizer tables: only their length matters
                    return GgufArray(element, length)
                return [struct.unpack_from(fmt, self.buf, start + i * size)[0] for i in range(length)]
            if element == _STRING and (strings or length <= _SHORT):
                return [self.string() for _ in range(length)]
            for _ in range(length):
                if element == _STRING:
                    self.skip_string()
                else:
                    self.value(element)
            return GgufArray(element, length)
        raise ValueError(f"unknown GGUF value type {kind}")


def read_header(path: Path, *, strings: frozenset[str] = frozenset()) -> GgufHeader:
    """Parse the metadata and tensor table of a little-endian GGUF v2/v3 file.

    Long arrays come back as `GgufArray` (type and length), except string arrays named in `strings`
    (e.g. "tokenizer.ggml.tokens"), which are decoded into lists.
    """
    import gguf

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if buf[:4] != b"GGUF":
            raise ValueError("missing GGUF magic")
        cur.pos = 4
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version} (or a big-endian file)")
        n_tensors, n_kv = cur.count(cur.unpack("<Q"), 8), cur.count(cur.unpack("<Q"), 8)
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack("<I"), strings=key in strings)
        tensors, layout = [], []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
            kind = gguf.GGMLQuantizationType(cur.unpack("<I"))
            cur.unpack("<Q")  # data offset
            elements = 1
            for dim in dims:
                elements *= dim
            block, size = gguf.GGML_QUANT_SIZES[kind]
            tensors.append((name, elements, elements // block * size))
            layout.append((name, int(kind), dims))
    return GgufHeader(metadata, tensors, layout)
