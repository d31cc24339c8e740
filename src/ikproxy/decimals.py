"""One parser for every decimal number that arrives from the wire.

`str.isdigit()` and `\\d` accept more than ASCII (`²`, `٣`), and `int()` refuses
strings longer than `sys.get_int_max_str_digits()`: checked with the one and
converted with the other, a hostile header becomes an exception. Every number
read from a header, a path, a query or a form goes through `parse_decimal`:
ASCII digits only, at most `max_digits` of them, else None.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_DIGITS", "parse_decimal", "parse_float", "parse_integer"]

#: The longest number accepted by default: 18 digits fit in 63 bits.
MAX_DIGITS: Final = 18

_ASCII_DIGITS: Final = frozenset("0123456789")
_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def parse_decimal(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of `text` if it is 1 to `max_digits` ASCII digits; else None."""
    if not 0 < len(text) <= max_digits or not _ASCII_DIGITS.issuperset(text):
        return None
    return int(text)


def parse_integer(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """`parse_decimal` with an optional leading sign (`-5`, `+5`)."""
    sign = -1 if text[:1] == "-" else 1
    value = parse_decimal(text[1:] if text[:1] in ("-", "+") else text, max_digits=max_digits)
    return None if value is None else sign * value


def parse_float(text: str, *, max_length: int = 64) -> float | None:
    """A finite float written in ASCII (`1`, `-0.5`, `2.5e-3`), at most `max_length`
    characters; else None (no `nan`, `inf`, `1_0` or non-ASCII digits)."""
    if len(text) > max_length or not _FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if value not in (float("inf"), float("-inf")) else None
