"""The drivers' console: a line of Ray's native core that tells the user nothing they can act on is dropped from
the driver's stderr (:func:`without_ray_data_actor_warning`); everything else passes through unchanged. Progress
bars (:class:`Progress`) draw their last state once, also in a log."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.std import tqdm  # text bars: the driver writes to a terminal or a log, never a notebook widget

#: Ray core (2.60) logs this error line for every actor created with arguments in the object store and
#: ``max_restarts > 0`` (ray-project/ray#53727). Ray Data creates every worker of an actor pool that way: its
#: DataContext and MapTransformer are object refs the driver owns, and ``max_restarts=-1`` lets Ray restart a killed
#: actor. The driver holds those refs until the dataset is consumed, so a restarted actor finds them; they are lost
#: only with the driver's own node, which ends the job anyway. A screen therefore shows the line without a fault.
RAY_DATA_ACTOR_ARGUMENTS = re.compile(
    rb"\[[^\]\n]*\] core_worker\.cc:\d+: Actor with class name: '[^'\n]*MapWorker[^\n]* has constructor arguments "
    rb"in the object store and max_restarts > 0\.[^\n]*\n"
)
#: Seconds to wait, on leaving the block, for the last bytes to reach the real stderr.
DRAIN_S = 5.0


@contextmanager
def dropping_stderr(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """Inside the block, what this process writes to file descriptor 2 (Python and native code alike) goes through
    a pipe: the matches of ``pattern`` are removed, the rest reaches the real stderr unchanged and in order. A native
    log line is one ``write`` (atomic on a pipe), so a match is never split between two reads."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, real, pattern), daemon=True, name="stderr-filter")
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end: the forwarder drains the pipe and stops
        forwarder.join(DRAIN_S)
        if not forwarder.is_alive():  # else a child process still holds the pipe: leave the forwarder its stream
            os.close(real)


def _forward(read_end: int, real: int, pattern: re.Pattern[bytes]) -> None:
    try:
        while chunk := os.read(read_end, 65536):
            data = pattern.sub(b"", chunk)
            while data:
                data = data[os.write(real, data) :]
    finally:
        os.close(read_end)


def without_ray_data_actor_warning():
    """:func:`dropping_stderr` of :data:`RAY_DATA_ACTOR_ARGUMENTS`: around a Ray Data actor pool's run."""
    return dropping_stderr(RAY_DATA_ACTOR_ARGUMENTS)


class Progress(tqdm):
    """A tqdm bar that draws its final count once. tqdm's ``close()`` draws the bar again; on a terminal the
    drawing overwrites itself, but a log (``ray job submit``, a file) shows every drawing as a line of its own, so
    the last line came twice. Here ``close()`` draws only when the count moved since the last drawing."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is None:  # a drawing of the bar (a message is tqdm clearing its line)
            if getattr(self, "_closing", False) and getattr(self, "_drawn_n", None) == self.n:
                return True
            self._drawn_n = self.n
        return super().display(msg, pos)

    def close(self) -> None:
        self._closing = True
        super().close()
