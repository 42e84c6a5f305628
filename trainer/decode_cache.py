"""Each photo decoded once per run, not once per epoch: a memory-bounded cache of decoded images.

On a CPU the loaders run in the training process itself (``devices.default_workers``: no workers on ≤ 2 CPUs), so
every pass over the photos (the linear probe, each epoch, each validation, the head refit, the calibration) decoded
every JPEG again on the cores the model needs. The cache keeps two things per file:

- ``source``: the decoded photo as ``load_image`` returns it, for the training transform (random crops need the
  whole photo);
- ``eval``: the eval transform's geometry (Resize, CenterCrop) applied to it, for every eval-transform pass. Small
  (224×224×3 bytes), and it saves the resize too.

Both are exact: a cached run computes on the same pixels as an uncached one (``tests/trainer/test_decode_cache.py``).
A file that fails to decode is never cached, so it fails, and is reported, on every pass as before. The cache stops
growing at its byte limit (``--cache-mb``; a quarter of the machine's memory by default) and says so once; the files
beyond it are decoded on every pass. With loader workers (more than 2 CPUs, or ``--workers``) it is off: each worker
process would fill a copy of its own, and the workers decode beside the model rather than on its cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgeport.runtime.preprocess import load_image
from PIL import Image

__all__ = ["DecodeCache", "CacheStats", "default_limit_bytes"]

#: The default limit's share of physical memory.
MEMORY_SHARE = 0.25


def default_limit_bytes() -> int:
    """A quarter of the machine's physical memory (``os.sysconf``; 2 GiB where it cannot tell)."""
    try:
        return int(MEMORY_SHARE * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def _nbytes(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    images: int = 0
    bytes: int = 0
    full_at: int | None = None  # how many images it held when it first refused one


class DecodeCache:
    """Decoded photos and their eval crops, keyed by path, up to ``limit_bytes`` in all.

    ``eval_geometry`` is the eval transform's geometric part (``transforms.eval_geometry``); ``say`` gets the one line
    written when the cache fills up.
    """

    def __init__(self, limit_bytes: int, eval_geometry: Callable[[Image.Image], Image.Image],
                 say: Callable[[str], None] = print):
        self.limit_bytes = limit_bytes
        self.eval_geometry = eval_geometry
        self.say = say
        self.stats = CacheStats()
        self._stores: dict[str, dict[str, Image.Image]] = {"source": {}, "eval": {}}

    def source(self, path: str | os.PathLike) -> Image.Image:
        """The decoded photo at ``path`` (the training transform's input)."""
        return self._get("source", path, lambda: self._decode(path))

    def eval_image(self, path: str | os.PathLike) -> Image.Image:
        """The eval geometry of the photo at ``path`` (the rest of the eval transform is ``ToTensor``, ``Normalize``)."""
        return self._get("eval", path, lambda: self.eval_geometry(self._decode(path)))

    def _decode(self, path: str | os.PathLike) -> Image.Image:
        cached = self._stores["source"].get(os.fspath(path))
        return cached if cached is not None else load_image(Path(path))

    def _get(self, kind: str, path: str | os.PathLike, make: Callable[[], Image.Image]) -> Image.Image:
        key, store, stats = os.fspath(path), self._stores[kind], self.stats
        image = store.get(key)
        if image is not None:
            stats.hits += 1
            return image
        stats.misses += 1
        image = make()  # ImageDecodeError propagates uncached: the file fails, and is reported, on every pass
        size = _nbytes(image)
        if stats.bytes + size <= self.limit_bytes:
            image.load()
            store[key] = image
            stats.images += 1
            stats.bytes += size
        elif stats.full_at is None:
            stats.full_at = stats.images
            self.say(f"decode cache: full at {stats.images} images ({stats.bytes / 2**20:.0f} MiB, --cache-mb "
                     f"{self.limit_bytes / 2**20:.0f}); the photos beyond it are decoded again on every pass")
        return image

    def summary(self) -> dict[str, int | float | None]:
        """For metrics.json: what it held and how often it saved a decode."""
        s = self.stats
        return {"images": s.images, "mib": round(s.bytes / 2**20, 1), "limit_mib": round(self.limit_bytes / 2**20, 1),
                "hits": s.hits, "misses": s.misses, "full_at": s.full_at}
