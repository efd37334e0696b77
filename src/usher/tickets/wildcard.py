"""``|``-separated name lists with ``*`` wildcards, for a ticket's ``app`` and ``video``.

A ``*`` matches any run of characters, ``/`` and the empty run included; every
other character is literal and case-sensitive, because stream names and VOD
paths are exact on the streaming servers too.

Matching runs on every playback check and the patterns come from publishers,
so it must never backtrack exponentially: ``a*a*a*…b`` against a long subject
is the classic way to hang a regex engine. A pattern is therefore split at its
``*`` runs into literal pieces and matched with the iterative two-pointer glob
algorithm, whose inner scan (look for the next piece from the current position)
is ``str.find``: with only ``*`` as a metacharacter, placing each piece at its
leftmost occurrence is always optimal, so the algorithm never revisits a
choice and its worst case is O(len(pattern) * len(subject)), done in C.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from usher.protocol.errors import InvalidField

MAX_ENTRIES = 1000
MAX_ENTRY_LENGTH = 1024

# Longer stored texts are compiled on every call instead of cached, so a few
# tickets with megabyte-sized lists cannot pin hundreds of megabytes in the
# cache; such tickets are rare and still match in linear time.
_CACHE_TEXT_LIMIT = 8192
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class _Glob:
    """One pattern holding at least one ``*``, cut into its literal pieces."""

    head: str
    middle: tuple[str, ...]
    tail: str
    # Lets a subject that is too short fail before any scanning.
    min_length: int

    def matches(self, subject: str) -> bool:
        if len(subject) < self.min_length:
            return False
        if not subject.startswith(self.head) or not subject.endswith(self.tail):
            return False
        # The tail is pinned to the end, so middle pieces must fit before it;
        # the length check above guarantees head and tail do not overlap.
        pos = len(self.head)
        stop = len(subject) - len(self.tail)
        for piece in self.middle:
            found = subject.find(piece, pos, stop)
            if found < 0:
                return False
            pos = found + len(piece)
        return True


def _compile_glob(pattern: str) -> _Glob:
    # split() on '*' also collapses runs of '*': they leave empty pieces,
    # which match trivially and are dropped from the middle.
    pieces = pattern.split("*")
    head, tail = pieces[0], pieces[-1]
    middle = tuple(piece for piece in pieces[1:-1] if piece)
    return _Glob(head, middle, tail, len(head) + len(tail) + sum(map(len, middle)))


@dataclass(frozen=True, slots=True)
class PatternList:
    """A compiled name list; build it with :func:`parse_pattern_list` or
    :func:`compiled_patterns`."""

    entries: tuple[str, ...]
    # Entries without '*' are the common case and need one hash lookup in
    # total rather than one comparison each.
    exact: frozenset[str]
    globs: tuple[_Glob, ...]
    match_all: bool

    def matches(self, subject: str) -> bool:
        """Whether ``subject`` matches at least one entry."""
        if self.match_all or subject in self.exact:
            return True
        return any(glob.matches(subject) for glob in self.globs)


def _build(entries: list[str]) -> PatternList:
    exact: set[str] = set()
    globs: dict[str, _Glob] = {}
    match_all = False
    for entry in entries:
        if "*" not in entry:
            exact.add(entry)
        elif entry.strip("*") == "":
            match_all = True
        elif entry not in globs:
            globs[entry] = _compile_glob(entry)
    return PatternList(tuple(entries), frozenset(exact), tuple(globs.values()), match_all)


def _shown(entry: str, limit: int = 80) -> str:
    """An entry quoted for an error message, shortened so the message stays readable."""
    if len(entry) > limit:
        entry = entry[:limit] + "…"
    return f"'{entry}'"


def parse_pattern_list(text: str, field: str) -> PatternList:
    """Validate a publisher's list and compile it.

    Nothing is stripped or case-folded: a stray space is part of a name on the
    streaming server too, and silently fixing it would issue a ticket that can
    never play. ``field`` names the request field in error messages.
    """
    if text == "":
        raise InvalidField(field, "the list is empty; send at least one name or pattern")
    # Count before splitting so an absurd list is refused without building it.
    count = text.count("|") + 1
    if count > MAX_ENTRIES:
        raise InvalidField(
            field, f"the list has {count} entries; at most {MAX_ENTRIES} are allowed"
        )
    entries = text.split("|")
    for number, entry in enumerate(entries, start=1):
        if entry == "":
            raise InvalidField(
                field,
                f"entry {number} of the list is empty; "
                "separate names with a single '|' and do not start or end with one",
            )
        if len(entry) > MAX_ENTRY_LENGTH:
            raise InvalidField(
                field,
                f"entry {number} is {len(entry)} characters long; "
                f"at most {MAX_ENTRY_LENGTH} are allowed",
            )
    return _build(entries)


def _compile_lenient(text: str) -> PatternList:
    return _build([entry for entry in text.split("|") if entry])


_compiled_cached = lru_cache(maxsize=_CACHE_SIZE)(_compile_lenient)


def compiled_patterns(text: str) -> PatternList:
    """The compiled form of a stored list, for the playback hot path.

    Stored lists were validated when the ticket was created, so this never
    raises; it skips empty entries instead, and an empty text matches nothing.
    """
    if len(text) > _CACHE_TEXT_LIMIT:
        return _compile_lenient(text)
    return _compiled_cached(text)


def validate_app_name(text: str, username: str) -> str:
    """Validate one application name (a stream user's ``app``): the rule of
    :func:`validate_app_list` for a list of exactly one entry, and no
    pattern, since a publish names one application."""
    if "|" in text or "*" in text:
        raise InvalidField("app", "give one application name, without '|' or '*'")
    validate_app_list(text, username)
    return text


def validate_app_list(text: str, username: str) -> PatternList:
    """Validate a ticket's ``app`` list for the account ``username``.

    Every entry must start with ``username-`` so a ticket can only ever open
    its own account's applications; a bare ``*`` or ``*-live`` would otherwise
    reach every tenant's streams. Usernames must not contain ``-`` for this to
    hold (``demo-*`` would match an account named ``demo-x``), so account
    creation must refuse such usernames.
    """
    patterns = parse_pattern_list(text, "app")
    prefix = f"{username}-"
    for entry in patterns.entries:
        if not entry.startswith(prefix):
            raise InvalidField(
                "app",
                f"every application must begin with '{prefix}', but {_shown(entry)} does not",
            )
    return patterns
