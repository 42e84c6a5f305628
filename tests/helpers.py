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
