"""Real photos that ship inside a PyPI package (scikit-image), for the demo and for verification."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgeport.runtime.errors import MissingDependencyError

__all__ = ["SAMPLE_PHOTOS", "packaged_photos"]

#: Photos in ``skimage/data``; chelsea is a tabby cat, coffee a cup, rocket a launch, astronaut a person.
SAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")


def packaged_photos() -> list[Path]:
    """Paths of the sample photos; raises with the install command when scikit-image is missing."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("sample photos need scikit-image: pip install 'edgeport[samples]'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = [data / name for name in SAMPLE_PHOTOS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise MissingDependencyError(f"scikit-image at {data} lacks {missing}; reinstall it: pip install 'edgeport[samples]'")
    return paths


if __name__ == "__main__":  # `python -m edgeport.export.samples` prints the paths, one per line
    print("\n".join(str(p) for p in packaged_photos()))
