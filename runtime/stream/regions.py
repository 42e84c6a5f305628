"""Named regions of a source's picture, each classified as a stream of its own: "garage door: open/closed" and
"driveway: car/empty" from one camera. The crop is cut from the decoded frame before the contract's preprocessing,
so the contract's resize and centre crop apply to the region as they did to the photos in training.

A region's box is fractions of the frame (``box``, checked when the config loads) or pixels (``pixels``, which only
a frame can check: the first frame of each source is checked before any of its records, and a region outside it
fails the source with the source, region and frame size named). A later frame of another size that a pixel box
does not fit (a folder of photos of mixed sizes) is an error record for that region; the stream goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ImageDecodeError, UsageError
from ..frames import Frame
from ..preprocess import ImageLimits, load_image

__all__ = ["Region", "RegionCropper", "RESERVED_REGIONS", "check_regions"]

#: Names that would collide with topics under a source's own (``<prefix>/<source>/state`` …).
RESERVED_REGIONS = frozenset({"state", "status", "dropped", "events"})
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # an MQTT topic level without escaping, as source ids


@dataclass(frozen=True)
class Region:
    """``box`` = (x0, y0, x1, y1): fractions of the frame's width and height (0..1), or pixels when ``pixels``."""

    name: str
    box: tuple[float, float, float, float]
    pixels: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name in RESERVED_REGIONS:
            raise UsageError(f"region name {self.name!r}: use 1-64 letters, digits, '_' or '-', not "
                             f"{', '.join(sorted(RESERVED_REGIONS))}; it becomes an MQTT topic level")
        box = self.box
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in box)):
            raise UsageError(f"region {self.name!r}: the box must be 4 numbers [x0, y0, x1, y1], got {box!r}")
        if self.pixels:
            if not all(isinstance(v, int) or float(v).is_integer() for v in box) or min(box) < 0:
                raise UsageError(f"region {self.name!r}: pixels must be whole numbers ≥ 0, got {list(box)}")
            box = tuple(int(v) for v in box)
        elif min(box) < 0 or max(box) > 1:
            raise UsageError(f"region {self.name!r}: box {list(box)} reaches outside the frame: box is fractions of the "
                             "frame's width and height, from 0 to 1 (for pixels, write pixels = [x0, y0, x1, y1])")
        else:
            box = tuple(float(v) for v in box)
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise UsageError(f"region {self.name!r}: {list(box)} is empty: it needs x0 < x1 and y0 < y1 "
                             "(left, top, right, bottom)")
        object.__setattr__(self, "box", box)

    @classmethod
    def parse(cls, text: str) -> Region:
        """``--region garage=0,0,0.5,1`` (fractions) or ``--region garage=0,0,640,720px`` (pixels)."""
        name, sep, spec = text.partition("=")
        pixels = spec.strip().endswith("px")
        parts = spec.strip().removesuffix("px").split(",")
        try:
            if not sep or len(parts) != 4:
                raise ValueError
            box = tuple(float(p) for p in parts)
        except ValueError:
            raise UsageError(f"--region {text!r}: write NAME=x0,y0,x1,y1 in fractions of the frame (garage=0,0,0.5,1) "
                             "or in pixels with px (garage=0,0,640,720px)") from None
        return cls(name.strip(), box, pixels)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.name}=" + ",".join(f"{v:g}" for v in self.box) + ("px" if self.pixels else "")

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The box in pixels of a ``width`` × ``height`` frame (at least one pixel), or None if it does not fit."""
        if self.pixels:
            x0, y0, x1, y1 = (int(v) for v in self.box)
            return (x0, y0, x1, y1) if x1 <= width and y1 <= height else None
        fx0, fy0, fx1, fy1 = self.box
        x0, y0 = min(int(round(fx0 * width)), width - 1), min(int(round(fy0 * height)), height - 1)
        return x0, y0, max(x0 + 1, int(round(fx1 * width))), max(y0 + 1, int(round(fy1 * height)))


def check_regions(regions: Sequence[Region]) -> tuple[Region, ...]:
    """Regions of one source: names unique (each is a stream, an MQTT topic and a state of its own)."""
    names = [r.name for r in regions]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"region {twice[0]!r} is given twice: each region of a source needs its own name")
    return tuple(regions)


class RegionCropper:
    """One source's frames → one frame per region, cut from the decoded picture (a camera's BGR array is sliced,
    without a copy). The first frame checks the pixel boxes (``ConfigError``: the source fails before any record)."""

    def __init__(self, source_id: str, regions: Sequence[Region], limits: ImageLimits):
        self.source_id, self.regions, self.limits = source_id, check_regions(regions), limits
        self.checked = False

    def __call__(self, frame: Frame) -> list[Frame]:
        if frame.error is not None:
            return [replace(frame, region=r.name) for r in self.regions]
        array = frame.image if isinstance(frame.image, np.ndarray) and frame.image.ndim in (2, 3) else None
        try:
            picture = None if array is not None else load_image(frame.image, frame.color, self.limits)
        except ImageDecodeError as exc:
            return [replace(frame, image=None, error=exc.reason, region=r.name) for r in self.regions]
        except TypeError as exc:  # not an image at all: a bad frame, not a bad stream
            return [replace(frame, image=None, error=str(exc), region=r.name) for r in self.regions]
        width, height = (array.shape[1], array.shape[0]) if array is not None else picture.size
        boxes = [(r, r.pixel_box(width, height)) for r in self.regions]
        outside = [r for r, box in boxes if box is None]
        if outside and not self.checked:
            r = outside[0]
            raise ConfigError(f"source {self.source_id!r}, region {r.name!r}: the pixel box {list(r.box)} reaches outside "
                              f"the source's {width}×{height} frames; make it fit, or give the region as fractions "
                              "(box = [x0, y0, x1, y1] from 0 to 1)")
        self.checked = True
        out = []
        for r, box in boxes:
            if box is None:
                out.append(replace(frame, image=None, error=f"region {r.name!r}: the pixel box {list(r.box)} reaches "
                                                             f"outside this {width}×{height} frame", region=r.name))
            elif array is not None:
                x0, y0, x1, y1 = box
                out.append(replace(frame, image=array[y0:y1, x0:x1], region=r.name))
            else:
                out.append(replace(frame, image=picture.crop(box), color=None, region=r.name))
        return out
