"""The one stream loop, used by one source and by several, by the Python API and by both CLI commands.

Every source is read in its own thread, which also decodes and preprocesses its frames, into a bounded queue
(``hub.Hub``): so decoding the next frames overlaps with inference on this one, for one folder as for four
cameras. The loop takes what is ready, swaps the model between two batches when a reloader holds a checked
one, classifies the batch in one inference call, and hands each result to the capture, the stats and the
sinks, in that order, before yielding it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Iterable, Iterator, Protocol, Sequence

from ..classifier import Classifier, Prepared
from ..frames import Frame
from ..preprocess import ImageInput, describe_source
from ..records import StreamResult, to_record
from ..reload import HotReloader
from .hub import Hub
from .regions import Region, RegionCropper
from .sources import Source, SourceEvent
from .states import Smoothing, StateChange, States
from .stats import Stats

__all__ = ["Stream", "classify_stream", "record_of", "Sink", "Capturer", "AUTO_BATCH_MAX", "PREFETCH_BATCHES"]

#: A sink gets every record (a dict: a frame's result or a source event) as it is produced.
Sink = Callable[[dict], None]
#: ``batch="auto"``: one frame per source per inference call, at most this many.
AUTO_BATCH_MAX = 8
#: A single file source is read this many batches ahead (at least two frames), so the next batch is being decoded
#: while this one runs; more would only hold memory.
PREFETCH_BATCHES = 2


class Capturer(Protocol):
    """What the loop needs of a capture (``service.capture.Capture``): a look at every classified frame."""

    def consider(self, frame: Frame, result: StreamResult) -> object: ...


def record_of(item: StreamResult | SourceEvent | StateChange) -> dict:
    return to_record(item) if isinstance(item, StreamResult) else item.record()


class Stream:
    """Several sources (or one) through one classifier. Iterate it for ``StreamResult`` and ``SourceEvent`` items
    in arrival order, each source's frames in their own order; a source with ``regions`` gives one result per region
    of each frame, and one with ``smoothing`` a ``StateChange`` after the result that changed a stream's state.

    ``batch``: frames per inference call at most, or ``"auto"`` (one per source); a call takes what is ready
    and never waits to fill a batch. ``sinks`` get every record as it is produced; ``capture`` sees every frame's
    result; ``reloader`` (a started ``reload.HotReloader``) swaps a checked new model in between two batches,
    and a frame prepared with the old model's contract is prepared again with the new one's.
    """

    def __init__(self, clf: Classifier, sources: Sequence[Source], *, top_k: int = 5, threshold: float | None = None,
                 batch: int | str = "auto", sinks: Iterable[Sink] = (), capture: Capturer | None = None,
                 reloader: HotReloader | None = None, stats: Stats | None = None):
        self.clf, self.sources = clf, list(sources)
        self.top_k, self.threshold = top_k, threshold
        self.batch = min(len(self.sources), AUTO_BATCH_MAX) if batch == "auto" else int(batch)
        self.sinks, self.capture, self.reloader = list(sinks), capture, reloader
        self.hub, self.stats = Hub(), stats or Stats()
        self.states = States({s.id: s.smoothing for s in self.sources if s.smoothing is not None})
        self.failures: list[BaseException] = []  # a source that raised something other than an outage
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        one_file_source = len(self.sources) == 1 and not self.sources[0].live
        for source in self.sources:
            depth = max(2, PREFETCH_BATCHES * self.batch) if one_file_source else None
            self.hub.add(source.id, source.live, depth)
            self.stats.add_source(source.id, source.live)

    def start(self) -> Stream:
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
        crop = RegionCropper(source.id, source.regions, self.clf.limits) if source.regions else None
        try:
            for item in source.frames(self._stop):
                if isinstance(item, SourceEvent):
                    ok = self.hub.put(source.id, item, is_frame=False)
                elif crop is not None:  # the regions of one frame: one queue item, so a live source drops none alone
                    ok = self.hub.put(source.id, [self.clf.prepare(f) for f in crop(item)])
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
                yield [one for item in taken for one in (item if isinstance(item, list) else [item])]

    def classify(self, items: list[Prepared | SourceEvent]) -> list[StreamResult | SourceEvent | StateChange]:
        """One inference call for the frames in ``items`` (events pass through in place); capture, stats and
        sinks see each result before it is returned, and a state it changed follows it."""
        if self.reloader is not None:
            swapped = self.reloader.take()  # a checked new bundle is swapped in here, between two batches
            if swapped is not None:
                self.stats.model_sha256, self.stats.model_format = swapped["new"]["sha256"], swapped["new"]["format"]
        frames = [x for x in items if not isinstance(x, SourceEvent)]
        t0 = time.perf_counter()
        results = iter(self.clf.classify_prepared(frames, self.top_k, self.threshold) if frames else [])
        if frames:
            self.stats.inference(time.perf_counter() - t0, len(frames))
        out: list[StreamResult | SourceEvent | StateChange] = []
        for item in items:
            first = len(out)
            if isinstance(item, SourceEvent):
                self.stats.event(item.source_id, item.event)
                out.append(item)
            else:
                result = next(results)
                if item.frame.region is not None:
                    result = replace(result, region=item.frame.region)
                source_id = item.frame.source_id or self.sources[0].id
                self.stats.frame(source_id, result.ok)
                if self.capture is not None:
                    self.capture.consider(item.frame, result)
                out.append(result)
                change = self.states.see(source_id, result)
                if change is not None:
                    out.append(change)
            if self.sinks:  # a record is built once per item, and only when someone takes it
                for produced in out[first:]:
                    record = record_of(produced)
                    for sink in self.sinks:
                        sink(record)
        for source_id, drops in self.hub.drops.items():
            self.stats.sources[source_id].drops = drops
            self.stats.sources[source_id].queue_depth = self.hub.depth(source_id)
        return out

    def results(self, gate: Callable[[Iterator[list]], Iterable[list]] = lambda batches: batches,
                ) -> Iterator[StreamResult | SourceEvent | StateChange]:
        """Every result and event until the sources end; closing the generator stops the stream.
        ``gate`` wraps the wait for each batch (``shutdown.SigtermStop.frames``: SIGTERM stops a wait at once)."""
        if not self._threads:
            self.start()
        try:
            for items in gate(self.batches()):
                yield from self.classify(items)
        finally:
            self.stop()

    def __iter__(self) -> Iterator[StreamResult | SourceEvent | StateChange]:
        return self.results()


def _as_frames(frames: Iterable[Frame | ImageInput], color: str | None) -> Iterator[Frame]:
    return (f if isinstance(f, Frame) else Frame(describe_source(f), f, color=color) for f in frames)


def classify_stream(clf: Classifier, frames: Iterable[Frame | ImageInput], *, top_k: int = 5,
                    threshold: float | None = None, color: str | None = None, batch: int = 1, sinks: Iterable[Sink] = (),
                    capture: Capturer | None = None, reloader: HotReloader | None = None,
                    gate: Callable[[Iterator[list]], Iterable[list]] = lambda batches: batches,
                    regions: Sequence[Region] = (), smoothing: Smoothing | None = None,
                    ) -> Iterator[StreamResult | StateChange]:
    """One ``StreamResult`` per frame of one source, in order, as frames arrive; a frame that cannot be decoded
    gives an error result and the stream goes on. ``frames`` are ``Frame`` items or plain images (``color``
    applies to ndarrays); ``threshold``: below this best score the label is ``"unknown"``; ``batch`` > 1 runs up
    to that many frames per inference call. The frames are decoded one batch ahead in a thread of their own.
    ``regions``: one result per region of each frame; ``smoothing``: a ``StateChange`` follows the result that
    changed a stream's state. An error of the source itself (a watched folder removed, a pixel region outside the
    first frame) is raised here, after every result before it."""
    items = _as_frames(frames, color)
    # One anonymous source: its records carry no source_id, as edge-predict classify prints them.
    source = Source("frames", "frames", lambda: items, tag=False, regions=tuple(regions), smoothing=smoothing)
    stream = Stream(clf, [source], top_k=top_k, threshold=threshold, batch=batch, sinks=sinks, capture=capture,
                    reloader=reloader)
    for item in stream.results(gate):
        if isinstance(item, SourceEvent):
            if item.event == "source_failed" and stream.failures:
                raise stream.failures[0]
            continue
        yield item
