"""How a requester's personal data reads where it is masked: exports without --include-pii,
and the console's request page for staff who do not hold the request (workflow.permissions
.may_see_contact says who does)."""

from __future__ import annotations

import re
from collections.abc import Sequence

#: A mainland mobile number (11 digits starting with 1, maybe grouped 3-4-4 and prefixed
#: +86 / 0086 / 86) that is not part of a longer number.
MOBILE = re.compile(
    r"(?<![\d+])(?P<prefix>(?:\+|00)?86[- ]?)?"
    r"(?P<mobile>1\d{2}[- ]?\d{4}[- ]?\d{4})(?!\d)"
)


def mask_name(name: str | None) -> str:
    """A name reduced to its first character and "*" (张三 -> 张*; one character -> *)."""
    name = (name or "").strip()
    if not name:
        return ""
    return "*" if len(name) == 1 else name[0] + "*"


def mask_phone(phone: str | None) -> str:
    """A phone number reduced to its first 3 and last 4 characters (138****5678).

    Anything shorter than a mobile number (11 characters) becomes "****".
    """
    phone = (phone or "").strip()
    if not phone:
        return ""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 11 else "****"


def mask_mobiles(text: str) -> str:
    """`text` with every mobile number in it masked (13812345678 -> 138****5678)."""

    def masked(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group("mobile"))
        return (match.group("prefix") or "") + mask_phone(digits)

    return MOBILE.sub(masked, text)


class Redactor:
    """Masks one request's personal data in its cells, or passes everything through."""

    def __init__(
        self, *, names: Sequence[str | None], phones: Sequence[str | None], include_pii: bool
    ) -> None:
        self.include_pii = include_pii
        secrets: dict[str, str] = {}
        # One-character names cannot be looked for in text without masking every such
        # character; short phone-like strings likewise.
        for name in names:
            if name and len(name.strip()) >= 2:
                secrets[name.strip()] = mask_name(name)
        for phone in phones:
            if phone and len(phone.strip()) >= 5:
                secrets[phone.strip()] = mask_phone(phone)
        #: Longest first, so a name inside a longer one does not leave the rest showing.
        self.secrets = sorted(secrets.items(), key=lambda item: -len(item[0]))

    def name(self, value: str | None) -> str:
        """A requester's name."""
        return (value or "").strip() if self.include_pii else mask_name(value)

    def phone(self, value: str | None) -> str:
        """A requester's phone number."""
        return (value or "").strip() if self.include_pii else mask_phone(value)

    def text(self, value: str | None) -> str:
        """Free text (request, result, note): the requester's name and phone and every mobile
        number in it masked."""
        if not value:
            return ""
        if self.include_pii:
            return value
        for secret, masked in self.secrets:
            value = value.replace(secret, masked)
        return mask_mobiles(value)
