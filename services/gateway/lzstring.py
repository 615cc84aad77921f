"""lz-string's ``decompressFromBase64`` (pieroxy/lz-string 1.5, MIT), which old posthog-js builds
use for ``compression=lz64``. No maintained PyPI package does this; it is a short algorithm, checked
against the npm package itself in ``tests/test_gateway_posthog.py``.

The compressor emits codes of a growing bit width; each names a dictionary entry, a literal
(8 or 16 bits), or the end. Output is UTF-16 code units as JavaScript strings hold them, joined
and decoded here (a pair of surrogates becomes one character). ``limit`` bounds the output in
code units: the dictionary makes a small input expand quadratically.
"""

from __future__ import annotations

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
VALUES = {c: i for i, c in enumerate(ALPHABET)}


class LzError(ValueError):
    pass


class _Bits:
    """The input's 6-bit characters as a stream of bits, low bit first within each read."""

    __slots__ = ("index", "position", "text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value = self._char(0)
        self.position = 32
        self.index = 1

    def _char(self, index: int) -> int:
        if index >= len(self.text):
            return 0  # as JavaScript's charAt past the end: reads as 0 until the end code
        value = VALUES.get(self.text[index])
        if value is None:
            raise LzError(f"not lz-string base64: {self.text[index]!r} at {index}")
        return value

    def read(self, width: int) -> int:
        bits, power = 0, 1
        for _ in range(width):
            if self.value & self.position:
                bits |= power
            self.position >>= 1
            if self.position == 0:
                self.position = 32
                self.value = self._char(self.index)
                self.index += 1
            power <<= 1
        return bits


def decompress_from_base64(text: str, limit: int) -> str:
    """The string ``LZString.compressToBase64`` was given; :class:`LzError` if ``text`` is not
    one of its outputs or expands past ``limit`` code units."""
    if not text:
        raise LzError("empty input")
    bits = _Bits(text)
    first = bits.read(2)
    if first == 2:
        return ""
    if first not in (0, 1):
        raise LzError("bad first code")
    entry = chr(bits.read(8 if first == 0 else 16))
    dictionary: list[str] = ["", "", "", entry]
    w = entry
    out = [entry]
    size = len(entry)
    enlarge_in, width = 4, 3
    while True:
        if bits.index > len(text):
            raise LzError("input ended without an end code")
        code = bits.read(width)
        if code in (0, 1):
            dictionary.append(chr(bits.read(8 if code == 0 else 16)))
            code = len(dictionary) - 1
            enlarge_in -= 1
        elif code == 2:
            return _text("".join(out))
        if enlarge_in == 0:
            enlarge_in = 1 << width
            width += 1
        if code < len(dictionary) and code >= 3:
            current = dictionary[code]
        elif code == len(dictionary):
            current = w + w[0]
        else:
            raise LzError("bad dictionary reference")
        out.append(current)
        size += len(current)
        if size > limit:
            raise LzError(f"expands past {limit}")
        dictionary.append(w + current[0])
        enlarge_in -= 1
        w = current
        if enlarge_in == 0:
            enlarge_in = 1 << width
            width += 1


def _text(units: str) -> str:
    """JavaScript's UTF-16 code units (surrogates as they are) as a Python string."""
    try:
        return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise LzError("lone surrogate in the output") from exc
