"""Ctrl-C during a sweep: Ray Tune stops gracefully, and the trials learn it was an interrupt.

Ray Tune stops a trial the same way whether its scheduler stopped it or the user pressed Ctrl-C:
`tune.report` raises SystemExit inside the trial, which must then end its MLflow run either as
stopped early (FINISHED) or as interrupted (KILLED, for `--resume` to continue). A trial cannot tell
the two apart, and the driver learns of the interrupt only after Tune has stopped the trials, too
late to correct what they write. So the first SIGINT is held for one step of Tune's loop: the driver
marks its MLflow parent run interrupted, then hands the signal to Tune, which stops the trials;
each reads the mark before it ends its run.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

from ray.tune import Callback

_held: list[tuple[int, Any]] = []  # a SIGINT waiting for the mark; process-wide, as signal handlers are


def _second_interrupt(signum: int, frame: object) -> None:
    """SIGINT's handler during fit(): Ray Tune swaps in its own and, on the first Ctrl-C, puts this one back."""
    raise KeyboardInterrupt


def _hold(signum: int, frame: Any) -> None:
    _held.append((signum, frame))


def fit_watching_interrupts(tuner: Any) -> tuple[Any, bool]:
    """Run fit(); its ResultGrid, and True if a SIGINT ended it. Ray Tune stops gracefully on it and
    returns normally, so the signs are that its handler gave SIGINT back to the one installed before,
    or that the signal was still held when the last trial ended."""
    previous = signal.signal(signal.SIGINT, _second_interrupt)
    _held.clear()
    try:
        results = tuner.fit()
        tune_saw_it = signal.getsignal(signal.SIGINT) is _second_interrupt and not os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        return results, tune_saw_it or bool(_held)
    finally:
        signal.signal(signal.SIGINT, previous)


class MarkInterrupt(Callback):
    """Puts a holding handler in front of Ray Tune's SIGINT handler; at the next step of Tune's loop (not
    inside a signal handler) it calls `mark`, and only then passes the signal on to Tune."""

    def __init__(self, mark: Callable[[], None]) -> None:
        self.mark = mark  # pickled with Tune's experiment state, and used again on --resume
        self._tune_handler: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"mark": self.mark}  # Tune's handler belongs to this process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["mark"])

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler not in (_second_interrupt, _hold):  # Tune's own, installed as fit() began
            self._tune_handler = handler
            signal.signal(signal.SIGINT, _hold)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not _held or self._tune_handler is None:
            return
        try:
            self.mark()
        except Exception as err:  # the driver's check after fit() still closes the interrupted runs
            print(f"could not mark the sweep interrupted in MLflow ({err}); interrupted trials may read as stopped early", file=sys.stderr)
        signum, frame = _held.pop()
        _held.clear()
        self._tune_handler(signum, frame)  # sets Tune's stop event and gives SIGINT back to `_second_interrupt`
