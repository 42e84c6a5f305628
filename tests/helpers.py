"""Bad inputs made from real files, as users produce them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def truncated_jpeg(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def text_as_jpeg(dst: Path) -> Path:
    dst.write_text("this is a text file that someone named .jpg\n")
    return dst


def empty_file(dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def decompression_bomb(dst: Path) -> Path:
    """A small PNG whose header declares 12000×12000 pixels (above Pillow's MAX_IMAGE_PIXELS)."""
    Image.new("1", (12000, 12000)).save(dst, format="PNG")
    return dst


def hymenoptera_subset(root: Path, hymenoptera: Path, per_class: dict[str, int]) -> Path:
    """The first N real photos per class of each split (``{"train": 24, "val": 20}``), as symlinks under ``root``."""
    for split, n in per_class.items():
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for src in sorted((hymenoptera / split / cls).glob("*.jpg"))[:n]:
                (root / split / cls / src.name).symlink_to(src)
    return root
