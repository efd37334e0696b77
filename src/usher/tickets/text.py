"""Which text Usher can store and log: one rule for every backend.

Callers send what they like, and JSON can carry lone surrogates
(``"\\ud800"``) that no UTF-8 database or log file can hold, and PostgreSQL's
text type refuses NUL. Both become U+FFFD (the replacement character) before
anything is stored, logged or used as a filter, on every backend, so a value
reads back as it was matched and a filter for a logged value finds it.
"""

from __future__ import annotations

import re
from typing import Final

_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD."""
    if value.isascii():
        # The common case, without the regex: only NUL can be wrong here.
        return value if "\x00" not in value else value.replace("\x00", "\ufffd")
    return _UNSTORABLE.sub("\ufffd", value)
