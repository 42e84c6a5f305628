"""Bounded per-source queues behind one condition, so the inference loop can wait on all sources at once.

A live source's queue drops its oldest frame when full (the next one classified is fresh) and counts the
drop; a file source's put waits for room, so no file frame is ever lost. Events (a source lost or back)
are never dropped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["Hub", "LIVE_QUEUE", "FILE_QUEUE"]

#: Frames waiting per source: a live source keeps only the newest, a file source one ahead to overlap decode and inference.
LIVE_QUEUE = 1
FILE_QUEUE = 2


class Hub:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[str, deque] = {}
        self._live: dict[str, bool] = {}
        self._cap: dict[str, int] = {}
        self._open: set[str] = set()
        self._next = 0  # round-robin start, so no source starves another
        self.stopped = False
        self.drops: dict[str, int] = {}

    def add(self, source_id: str, live: bool, depth: int | None = None) -> None:
        """A source's queue: ``depth`` frames at most (default ``LIVE_QUEUE`` or ``FILE_QUEUE``). A file source
        read ahead by more than one batch keeps inference busy while its thread decodes the next frames."""
        with self._cond:
            self._queues[source_id], self._live[source_id] = deque(), live
            self._cap[source_id] = depth or (LIVE_QUEUE if live else FILE_QUEUE)
            self._open.add(source_id)
            self.drops[source_id] = 0

    def depth(self, source_id: str) -> int:
        return len(self._queues[source_id])

    def put(self, source_id: str, item: Any, is_frame: bool = True) -> bool:
        """Queue ``item``; False once the hub stopped (the source should end)."""
        queue = self._queues[source_id]
        cap = self._cap[source_id]
        with self._cond:
            if self._live[source_id]:
                frames = [x for x in queue if x[1]]
                if is_frame and len(frames) >= cap:
                    queue.remove(frames[0])  # the stale one goes
                    self.drops[source_id] += 1
            else:
                self._cond.wait_for(lambda: self.stopped or sum(1 for x in queue if x[1]) < cap or not is_frame)
            if self.stopped:
                return False
            queue.append((item, is_frame))
            self._cond.notify_all()
            return True

    def close(self, source_id: str) -> None:
        with self._cond:
            self._open.discard(source_id)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def take(self, limit: int, timeout: float = 0.5) -> list[Any] | None:
        """Up to ``limit`` items, at most one per source per round, round-robin; waits up to ``timeout`` for the
        first. [] when nothing came in time, None once every source ended and its queue is empty (or stopped)."""
        with self._cond:
            ready = lambda: self.stopped or any(self._queues.values()) or not self._open  # noqa: E731
            self._cond.wait_for(ready, timeout)
            if self.stopped or (not self._open and not any(self._queues.values())):
                return None
            ids = list(self._queues)
            start, self._next = self._next % max(1, len(ids)), self._next + 1
            order = ids[start:] + ids[:start]
            taken: list[Any] = []
            while len(taken) < limit and any(self._queues[i] for i in order):
                for source_id in order:
                    if self._queues[source_id] and len(taken) < limit:
                        taken.append(self._queues[source_id].popleft()[0])
            if taken:
                self._cond.notify_all()  # room for the file sources waiting in put()
            return taken
