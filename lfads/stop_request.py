"""SIGTERM or SIGINT while training: finish the step in flight, save a checkpoint, leave.

The queue stops a run with SIGTERM (a second Ctrl-C, `runqueue cancel`, a time limit) and KILLs it
after its grace (10 s by default). Periodic checkpoints come every 10 epochs, so without this an
interrupted run lost up to 10 epochs of training; with it, training again resumes at the very step
it stopped at. A step takes far less than the grace; the save, a few hundred ms for LFADS sizes.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise TrainingStopped once a stop was asked for (call between steps)."""
        if self.signum is not None:
            raise TrainingStopped(self.signum)

    @contextmanager
    def listening(self) -> Iterator[StopRequest]:
        """Note the signals instead of dying of them, for the duration of the block."""
        previous = {signum: signal.signal(signum, self._note) for signum in _SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def quiet_stdout() -> None:
    """Send what is left of stdout to /dev/null: its reader is gone (a broken pipe), and a failed
    flush at exit would turn the exit status into 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
