"""Logging an outage the way an operator reads a log: once when it starts, again at growing intervals, once at its end.

Reconnecting loops retry every second or two; logging each retry buries
everything else, and logging only the first hides that an outage is still
going on.
"""

from __future__ import annotations

import logging
import time

__all__ = ["Outage"]

#: When the first reminder comes, how much longer each next one waits, and the longest gap.
FIRST_REMINDER = 30.0
GROWTH = 2.0
LONGEST_GAP = 600.0


class Outage:
    """One thing that can become unreachable (a registry, an upstream), and what its users do meanwhile."""

    def __init__(self, log: logging.Logger, what: str, meanwhile: str) -> None:
        self._log = log
        self.what = what
        self.meanwhile = meanwhile
        self._since: float | None = None
        self._next_reminder = 0.0
        self._gap = FIRST_REMINDER

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, reason: str) -> None:
        """Another failed attempt: logged if it starts an outage or a reminder is due."""
        now = time.monotonic()
        if self._since is None:
            self._since, self._next_reminder, self._gap = now, now + FIRST_REMINDER, FIRST_REMINDER
            self._log.warning("%s: %s; %s", self.what, reason, self.meanwhile)
        elif now >= self._next_reminder:
            self._gap = min(LONGEST_GAP, self._gap * GROWTH)
            self._next_reminder = now + self._gap
            self._log.warning("%s: still failing after %.0fs: %s", self.what, now - self._since, reason)

    def recovered(self, detail: str = "") -> None:
        """A success: logged once if it ends an outage."""
        if self._since is None:
            return
        lasted = time.monotonic() - self._since
        self._since = None
        self._log.info("%s: reachable again after %.0fs%s", self.what, lasted, f"; {detail}" if detail else "")
