"""Invitation codes: how they are made and how a typed code is read back.

A code is 12 characters of Crockford's base32 alphabet (no I, L, O, U), 60 random bits, shown
as three groups of four (``7K3M-Q9XD-2HRT``). Reading one back forgives what people do when
they type it: any case, dashes or spaces left out or added, and the look-alikes O for 0 and
I or L for 1. Only the normalised code's SHA-256 digest is ever stored.

Codes of the earlier form (8 hex digits) still in the database are read the same way: hex
digits are in the alphabet and untouched by the look-alike mapping, so such a code keeps
working until it expires.
"""

from __future__ import annotations

import secrets

#: Crockford's base32 alphabet: digits and letters without I, L, O and U (32 symbols, 5 bits).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

#: Characters in a code (12 x 5 = 60 random bits).
CODE_LENGTH = 12

#: Characters per group when a code is shown.
GROUP = 4

#: Look-alikes typed for the alphabet's symbols.
LOOK_ALIKES: dict[str, str] = {"O": "0", "I": "1", "L": "1"}

#: Separators people put between groups; dropped when reading a code.
SEPARATORS = frozenset("-_ \u3000\u2010\u2011\u2012\u2013\u2014\u2212\uff0d")

#: Longest input read as a code; anything longer is no code at all.
MAX_INPUT = 64


def new_code() -> str:
    """A fresh random code, grouped for reading aloud and typing (XXXX-XXXX-XXXX)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + GROUP] for i in range(0, CODE_LENGTH, GROUP))


def normalise(typed: str) -> str:
    """The canonical form of a typed code, the one whose digest is stored.

    Case, separators and look-alikes are forgiven; a character outside the alphabet is kept
    (upper-cased), so the result matches no stored code. A full-width character typed on a
    Chinese keyboard is read as its ASCII twin.
    """
    kept: list[str] = []
    for char in typed[:MAX_INPUT]:
        if char in SEPARATORS:
            continue
        if "\uff01" <= char <= "\uff5e":
            char = chr(ord(char) - 0xFEE0)
        upper = char.upper()
        kept.append(LOOK_ALIKES.get(upper, upper))
    return "".join(kept)
