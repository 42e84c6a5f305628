"""The service loop: one reader thread per source, one shared inference loop, records out to plain callables."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from ..records import StreamResult, to_record
from .hub import Hub
from .sources import Source, SourceEvent
from .stats import Stats

if TYPE_CHECKING:
    from ..classifier import Classifier, Prepared
    from .capture import Capture

__all__ = ["MultiStream", "serve", "Sink", "AUTO_BATCH_MAX"]

#: A sink gets every record (a dict: a frame's result or a source event) as it is produced.
Sink = Callable[[dict], None]
#: ``batch="auto"``: one frame per source per inference call, at most this many.
AUTO_BATCH_MAX = 8


class MultiStream:
    """Several sources through one classifier. Iterate it for ``StreamResult`` items and ``SourceEvent`` items,
    in arrival order (each source's frames in their own order). ``batch``: frames per inference call at most, or
    ``"auto"`` (one per source); a call takes what is ready and never waits to fill a batch."""

    def __init__(self, clf: Classifier, sources: Sequence[Source], batch: int | str = "auto", stats: Stats | None = None,
                 capture: Capture | None = None):
        self.clf, self.sources, self.capture = clf, list(sources), capture
        self.batch = min(len(self.sources), AUTO_BATCH_MAX) if batch == "auto" else int(batch)
        self.hub, self.stats = Hub(), stats or Stats()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.failures: list[BaseException] = []  # a source that raised something other than an outage
        for source in self.sources:
            self.hub.add(source.id, source.live)
            self.stats.add_source(source.id, source.live)

    def start(self) -> MultiStream:
        for source in self.sources:
            thread = threading.Thread(target=self._read, args=(source,), name=f"edgeport-source-{source.id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.hub.stop()

    def join(self, timeout: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _read(self, source: Source) -> None:
        """A source's thread: read, decode and preprocess into its queue (a camera's read waits here, not in inference)."""
        try:
            for item in source.frames(self._stop):
                if isinstance(item, SourceEvent):
                    ok = self.hub.put(source.id, item, is_frame=False)
                else:
                    ok = self.hub.put(source.id, self.clf.prepare(item))
                if not ok:
                    return
        except BaseException as exc:  # e.g. a watched folder removed: reported by the loop, the other sources go on
            self.failures.append(exc)
            self.hub.put(source.id, SourceEvent(source.id, source.name, "source_failed", error=str(exc)), is_frame=False)
        finally:
            self.hub.put(source.id, SourceEvent(source.id, source.name, "source_ended"), is_frame=False)
            self.hub.close(source.id)

    def batches(self) -> Iterator[list[Prepared | SourceEvent]]:
        """What is ready in the queues, batch by batch, until every source ended (or ``stop()``)."""
        while (taken := self.hub.take(self.batch)) is not None:
            if taken:
                yield taken

    def classify(self, items: list[Prepared | SourceEvent], top_k: int = 5,
                 threshold: float | None = None) -> list[StreamResult | SourceEvent]:
        """One inference call for the frames in ``items``; events pass through in place."""
        frames = [x for x in items if not isinstance(x, SourceEvent)]
        watcher = getattr(self.clf, "_watcher", None)
        if watcher is not None:
            swapped = watcher.take()  # a checked new bundle is swapped in here, between two batches
            if swapped is not None:
                self.stats.model_sha256, self.stats.model_format = swapped["new"]["sha256"], swapped["new"]["format"]
        t0 = time.perf_counter()
        results = iter(self.clf.classify_prepared(frames, top_k, threshold) if frames else [])
        if frames:
            self.stats.inference(time.perf_counter() - t0, len(frames))
        out: list[StreamResult | SourceEvent] = []
        for item in items:
            if isinstance(item, SourceEvent):
                self.stats.event(item.source_id, item.event)
                out.append(item)
            else:
                result = next(results)
                self.stats.frame(result.source_id, result.ok)
                if self.capture is not None:
                    self.capture.consider(item.frame, result)
                out.append(result)
        for source_id, drops in self.hub.drops.items():
            self.stats.sources[source_id].drops = drops
            self.stats.sources[source_id].queue_depth = self.hub.depth(source_id)
        return out

    def __iter__(self) -> Iterator[StreamResult | SourceEvent]:
        if not self._threads:
            self.start()
        try:
            for items in self.batches():
                yield from self.classify(items)
        finally:
            self.stop()


def record_of(item: StreamResult | SourceEvent) -> dict:
    return item.record() if isinstance(item, SourceEvent) else to_record(item)


def serve(clf: Classifier, sources: Sequence[Source], sinks: Iterable[Sink] = (), top_k: int = 5,
          threshold: float | None = None, batch: int | str = "auto", stats: Stats | None = None,
          capture: Capture | None = None) -> Iterator[StreamResult | SourceEvent]:
    """Classify several sources with one model; every record goes to every sink (plain callables) as it is
    produced, and the results are yielded too. Ends when every source ended; stop it early by closing the
    generator (``break`` out of the loop)."""
    stream = MultiStream(clf, sources, batch, stats, capture).start()
    sinks = list(sinks)
    try:
        for items in stream.batches():
            for item in stream.classify(items, top_k, threshold):
                if sinks:  # a record is built once per item, and only when someone takes it
                    record = record_of(item)
                    for sink in sinks:
                        sink(record)
                yield item
    finally:
        stream.stop()
