"""SIGTERM (what systemd and Docker send) as a clean stop: finish the frame in work, then the summary."""

from __future__ import annotations

import signal
from typing import Iterable, Iterator

from .frames import Frame

__all__ = ["Terminated", "SigtermStop"]


class Terminated(BaseException):
    """SIGTERM arrived while waiting for the next frame (a BaseException, like KeyboardInterrupt)."""


class SigtermStop:
    """SIGTERM (what systemd and Docker send) stops the stream like Ctrl-C, but the frame being classified
    is finished and printed first: while a frame is in work the signal only sets ``requested``; while
    waiting for the source it raises ``Terminated`` at once (a watch or camera may wait for long)."""

    def __init__(self) -> None:
        self.requested = False
        self.waiting = False

    def __enter__(self) -> "SigtermStop":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.waiting:
            raise Terminated()

    def frames(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """``frames``, marking the waits for the next one (where SIGTERM may stop at once)."""
        iterator = iter(frames)
        while not self.requested:
            self.waiting = True
            try:
                frame = next(iterator)
            except StopIteration:
                return
            finally:
                self.waiting = False
            yield frame
