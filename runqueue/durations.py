"""Durations as users write them: "90s", "2h", "1h30m", "45m", "1d", or plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
# Longer is a typo (30d meant as 30m?) and would overflow clocks and timers (epoll takes < 25 days).
LONGEST_S = 365 * 86400.0
LONGEST_GRACE_S = 86400.0  # between SIGTERM and SIGKILL: a stop that takes longer is no stop


def parse_duration(text: str | int | float, longest: float = LONGEST_S) -> float:
    """Seconds in `text`; raises ValueError with the accepted forms on anything else, or when it
    is longer than `longest`."""
    return at_most(_parse(text), text, longest)


def parse_wait(value: str | int | float, longest: float = LONGEST_S) -> float:
    """A wait that may be 0: 0, a number of seconds, or a duration ("30s", "0s"); one rule for the
    command line and the config file. ValueError says what is accepted."""
    try:
        seconds = _parse(value, allow_zero=True)
    except ValueError:
        raise ValueError(f'must be 0 or a duration such as "30s" or a finite number of seconds, got {value!r}') from None
    return at_most(seconds, value, longest)


def at_most(seconds: float, text: object, longest: float) -> float:
    """`seconds`, or ValueError naming `text` when it is longer than `longest`."""
    if seconds > longest:
        limit = f"{longest / 86400:g}d" if longest >= 86400 else f"{longest:g}s"
        raise ValueError(f"invalid duration {text!r}: must be at most {limit}")
    return seconds


def _parse(text: str | int | float, allow_zero: bool = False) -> float:
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str):
        seconds = _parse_text(text)
    else:  # a JSON list, object or null in a resources file
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 45m, 2h, 1h30m or a number of seconds")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):  # float() takes "inf", "nan"
        raise ValueError(f"invalid duration {text!r}: must be a positive, finite number of seconds")
    return seconds


def _parse_text(text: str) -> float:
    cleaned = text.strip().lower().replace(" ", "")
    try:
        return float(cleaned)
    except ValueError:
        pass
    position = 0
    seconds = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(cleaned) or not cleaned:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 45m, 2h, 1h30m or a number of seconds")
    return seconds


def format_duration(seconds: float) -> str:
    if 0 < seconds < 10 and abs(seconds - round(seconds)) >= 0.05:
        return f"{seconds:.1f}s"  # a sub-second back-off is not "0s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
