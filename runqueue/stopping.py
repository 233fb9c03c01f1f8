"""Stopping a run's processes from outside its supervisor: TERM, a grace period, then KILL.

KILL goes only to what got the TERM, and to processes those forked meanwhile (they share a session):
by then the run may have started again, and its new attempt, which its own new supervisor leads in
a session of its own, matches the same "processes of this run" rules."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from runqueue.procinfo import Identified, identify, is_alive, session_id, signal_identified


@dataclass(frozen=True)
class Stopping:
    members: Callable[[], list[int]]
    signalled: list[Identified]
    sessions: frozenset[int]

    @classmethod
    def begin(cls, members: Callable[[], list[int]]) -> Stopping:
        """Send SIGTERM to `members()` (another account's processes are skipped)."""
        signalled = signal_identified(identify(members()), signal.SIGTERM)
        sessions = frozenset(sid for pid, _ in signalled if (sid := session_id(pid)) is not None)
        return cls(members, signalled, sessions)

    @property
    def pids(self) -> list[int]:
        return [pid for pid, _ in self.signalled]

    def left(self) -> bool:
        """Whether any process that got the TERM is still there."""
        return any(is_alive(pid, start) for pid, start in self.signalled)

    def finish(self) -> None:
        """SIGKILL what is left of those processes and of what they started since."""
        known = {pid for pid, _ in self.signalled}
        late = [pid for pid in self.members() if pid not in known and session_id(pid) in self.sessions]
        signal_identified([*self.signalled, *identify(late)], signal.SIGKILL)
