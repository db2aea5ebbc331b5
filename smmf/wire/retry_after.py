"""`Retry-After`: how long a server asks to be left alone, as seconds or as an HTTP date (RFC 9110, 10.2.3)."""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime

__all__ = ["format_retry_after", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait, from either form; None for a missing or unreadable value.

    The standard's delay is a whole number of seconds, but fractional ones
    (sent by some servers) are taken as they are.  A date in the past means
    no wait (0).
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT, even when it does not say so
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def format_retry_after(seconds: float) -> str:
    """The header's value for a wait of `seconds`: whole seconds, at least 1, as the standard writes it."""
    return str(max(1, math.ceil(seconds)))
