"""Stopping a run cleanly on SIGTERM or SIGINT: finish the step, checkpoint it, exit 143 or 130.

While the step loop of :func:`~invertible.train.train` runs, :class:`StopSignals` replaces the handlers of
SIGTERM (what ``kill``, ``docker stop``, schedulers and cluster pre-emption send) and SIGINT (Ctrl-C) by one
that only records the signal. The loop ends after the step it arrived in (its logging and validation
included), the run writes the checkpoint of that step with the periodic checkpoints' writer, and
``train`` raises :class:`TrainingInterrupted`; ``invertible train`` prints its one line and exits with
``128 + signal``. Once the checkpoint is being written a further signal is ignored until it is complete;
before that (a long step or validation) a second signal goes to the handler it displaced: Ctrl-C twice
raises ``KeyboardInterrupt`` at once, a second SIGTERM kills the process, and the run resumes from its last
complete checkpoint. The handlers are put back when the loop and its checkpoint are done, also on an error.

Under ``torchrun`` the ranks receive a signal at different moments, or only one of them does (a scheduler's
``kill`` of one process). Each step's all-reduce of the loss carries :meth:`StopSignals.flags` too, so after the
same step every rank knows whether any rank was signalled (:func:`agreed_signal`), and all stop after it; one more
count after the final checkpoint covers a signal that arrived after the last step's all-reduce.

Handlers are only installed in the main thread (Python allows no other) and not for a signal whose handler
is ``SIG_IGN`` (a job started in the background by a shell ignores SIGINT) or was not set from Python.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

__all__ = ["StopSignals", "TrainingInterrupted", "STOP_SIGNALS", "agreed_signal"]

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after ``step`` steps, all of them in its checkpoint; ``resume=True`` continues.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it and ``except Exception`` does not swallow it.
    ``exit_status`` is the status of a process ended by the signal: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}, which the checkpoint in {run_dir} holds; "
                         "continue the run with --resume")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def agreed_signal(counts: Sequence[int]) -> int | None:
    """The signal every rank stops on, from how many ranks received each of :data:`STOP_SIGNALS` (summed
    :meth:`StopSignals.flags`): the first one any rank received, SIGTERM before SIGINT; ``None`` when none did."""
    return next((int(signum) for signum, count in zip(STOP_SIGNALS, counts) if count), None)


class StopSignals:
    """Context manager: while active, SIGTERM and SIGINT set :attr:`signum` instead of stopping the process.

    :meth:`hold` marks the start of the final checkpoint's write, from which a further signal is ignored;
    before it, a second signal is passed on to the handler this one replaced.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        #: the first stop signal received, or ``None``
        self.signum: int | None = None
        self._holding = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is None or previous == signal.SIG_IGN:
                continue  # set outside Python (cannot be put back), or ignored on purpose
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def flags(self) -> list[bool]:
        """For each of :data:`STOP_SIGNALS`, whether it is the signal received: what a rank adds to a collective."""
        return [self.signum == signum for signum in STOP_SIGNALS]

    def hold(self) -> None:
        """From now on a signal is ignored: the final checkpoint is being written."""
        self._holding = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        if self._holding:
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.__exit__()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
