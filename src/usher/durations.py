"""Lengths of time written the way operators write them: ``90d``, ``12h``, ``2w``.

One parser for every setting and option that takes such a length (the
retention age of ``usher db prune`` and ``USHER_PRUNE_ATTEMPTS_OLDER_THAN``),
so they accept and refuse the same spellings.
"""

from __future__ import annotations

import re
from typing import Final

from usher.protocol.errors import ConfigError

#: Seconds per unit letter.
UNITS: Final = {"h": 3600, "d": 86_400, "w": 7 * 86_400}

_DURATION: Final = re.compile(r"(\d{1,9})([hdw])")


def parse_duration(text: str, what: str) -> int:
    """Seconds in ``text`` (``Nh``, ``Nd`` or ``Nw``, N a whole number above 0).

    ``what`` names the option or setting in the error, e.g.
    ``--attempts-older-than``.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            f"{what} is {text!r}, which is not a length of time; write a whole number "
            "above 0 followed by h (hours), d (days) or w (weeks), such as 90d."
        )
    return int(match.group(1)) * UNITS[match.group(2)]
