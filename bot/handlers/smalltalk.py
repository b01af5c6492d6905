"""Small talk: what a requester's text is before it may become a request.

Greetings, thanks and acknowledgements (你好, 谢谢, 好的, emoji) are answered kindly and make no
request; a text too short to act on is answered with a question. The rule is data: a word list
(small_talk.txt next to this module, or REDESK_SMALL_TALK_FILE) and a minimum length
(REDESK_MIN_REQUEST_LENGTH), both applied to the normalised text.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from storage.settings import get_settings

#: The word list shipped with redesk.
DEFAULT_FILE = Path(__file__).with_name("small_talk.txt")

#: Unicode categories kept by normalisation: letters and numbers. Punctuation, symbols (emoji
#: among them), separators, marks (emoji variation selectors) and control/format characters
#: (the zero-width joiner of emoji sequences) carry no substance.
KEPT_CATEGORIES: tuple[str, ...] = ("L", "N")


class Kind(StrEnum):
    """What a requester's text is."""

    GREETING = "greeting"
    THANKS = "thanks"
    ACK = "ack"
    #: Nothing but punctuation, emoji or spaces.
    EMPTY = "empty"
    #: Shorter than the minimum length: asked to describe it, or to register it as it is.
    SHORT = "short"
    REQUEST = "request"


#: The kinds a word list may hold, in the order one wins over another in a combined message.
PHRASE_KINDS: tuple[Kind, ...] = (Kind.THANKS, Kind.GREETING, Kind.ACK)

#: Longest message looked at as a combination of phrases ("好的，谢谢！" is two); longer
#: texts are never small talk, so a long request costs no search.
MAX_SMALL_TALK = 40


class WordListError(ValueError):
    """The word list is malformed; the message names the file and line."""


def normalise(text: str) -> str:
    """`text` as the rule compares it: NFKC (full-width forms folded), lower case, and only
    letters and numbers kept."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in KEPT_CATEGORIES)


def parse_word_list(content: str, source: str = "word list") -> dict[str, Kind]:
    """The phrases of a word list (normalised) and their kinds.

    The format: `# comments`, blank lines, section lines `[greeting]`, `[thanks]`, `[ack]`,
    and one phrase per line under its section.

    Raises:
        WordListError: A phrase outside a section, or an unknown section.
    """
    phrases: dict[str, Kind] = {}
    kind: Kind | None = None
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().lower()
            if name not in {k.value for k in PHRASE_KINDS}:
                raise WordListError(
                    f"{source}, line {number}: unknown section [{name}]; "
                    "use [greeting], [thanks] or [ack]"
                )
            kind = Kind(name)
            continue
        if kind is None:
            raise WordListError(f"{source}, line {number}: a phrase before any section")
        phrase = normalise(line)
        if phrase:
            phrases[phrase] = kind
    return phrases


@dataclass(frozen=True)
class Rule:
    """The small-talk rule: phrases by kind and the shortest request."""

    phrases: dict[str, Kind]
    #: Normalised characters a text needs to be taken as a request (0: any length).
    min_length: int

    def classify(self, text: str) -> Kind:
        """What `text` is: small talk of a kind, too short, or a request."""
        core = normalise(text)
        if not core:
            return Kind.EMPTY
        if len(core) <= MAX_SMALL_TALK:
            kinds = self._split(core)
            if kinds is not None:
                return next(kind for kind in PHRASE_KINDS if kind in kinds)
        if len(core) < self.min_length:
            return Kind.SHORT
        return Kind.REQUEST

    def _split(self, core: str) -> set[Kind] | None:
        """The kinds of the phrases `core` is made of, or None if it is not made of phrases."""
        longest = max((len(phrase) for phrase in self.phrases), default=0)
        # ways[i]: the kinds of one way to cut core[:i] into phrases (None: no way).
        ways: list[set[Kind] | None] = [set()] + [None] * len(core)
        for end in range(1, len(core) + 1):
            for start in range(max(0, end - longest), end):
                before = ways[start]
                kind = self.phrases.get(core[start:end])
                if before is not None and kind is not None:
                    ways[end] = (ways[end] or set()) | before | {kind}
        return ways[len(core)]


@lru_cache(maxsize=4)
def load_rule(path: Path | None, min_length: int) -> Rule:
    """The rule from a word list file (None: the shipped one) and a minimum length.

    Raises:
        WordListError: The file is malformed.
    """
    source = path or DEFAULT_FILE
    return Rule(parse_word_list(source.read_text(encoding="utf-8"), str(source)), min_length)


def current_rule() -> Rule:
    """The rule of this process's settings."""
    settings = get_settings()
    return load_rule(settings.small_talk_file, settings.min_request_length)
