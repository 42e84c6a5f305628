"""Decode any image to RGB and apply the contract with numpy + Pillow only.

This reproduces torchvision's eval transform ``Resize(s) → CenterCrop(c) → ToTensor → Normalize``
operation for operation on PIL images (torchvision resizes PIL images with Pillow itself), so the
device computes the same tensor the trainer evaluated — checked file by file in the parity test.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import PreprocessContract
from .errors import ImageDecodeError, UsageError

__all__ = [
    "ImageInput",
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_ASPECT",
    "ImageLimits",
    "load_image",
    "preprocess",
    "preprocess_fast",
    "preprocess_files",
    "resized_size",
    "crop_box",
    "describe_source",
]

#: What the runtime accepts as one image. ndarrays need an explicit ``color`` (see ``load_image``).
ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

#: Pillow plugins the runtime (and the trainer, through ``load_image``) decodes: whatever the file is called.
#: None of them shells out (EPS, for one, runs Ghostscript from ``PATH``). JPEG includes MPO, as Pillow names many phone JPEGs.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
#: Pixel budget per image: the decoded picture (after any JPEG draft) and any resize of it stay within this.
DEFAULT_MAX_PIXELS = 40_000_000
#: Longer side / shorter side above this is refused: resizing the shorter side of a 1×60000 strip to 256
#: would allocate 256×15 360 000 pixels. 20:1 is past any camera or panorama a classifier is fed.
DEFAULT_MAX_ASPECT = 20.0
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class ImageLimits:
    """The work one image may cost on a device: ``max_pixels`` decoded or resized, ``max_aspect`` ratio."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect: float = DEFAULT_MAX_ASPECT

    def __post_init__(self) -> None:
        if not isinstance(self.max_pixels, int) or isinstance(self.max_pixels, bool) or self.max_pixels < 1:
            raise UsageError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")
        if not (isinstance(self.max_aspect, (int, float)) and math.isfinite(self.max_aspect) and self.max_aspect >= 1):
            raise UsageError(f"max_aspect must be a finite number ≥ 1, got {self.max_aspect!r}")

    def check(self, width: int, height: int, source: str, what: str = "image") -> None:
        if min(width, height) < 1:
            raise ImageDecodeError(source, f"{what} has no pixels ({width}×{height})")
        if max(width, height) / min(width, height) > self.max_aspect:
            raise ImageDecodeError(source, f"{what} is {width}×{height}, an aspect ratio over {self.max_aspect:g}:1; "
                                           "crop it to the part to classify")
        if width * height > self.max_pixels:
            raise ImageDecodeError(source, f"{what} is {width}×{height} = {width * height} pixels, over this device's "
                                           f"pixel budget of {self.max_pixels} (--max-pixels); downscale it first")


DEFAULT_LIMITS = ImageLimits()

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def describe_source(image: object) -> str:
    """A short name for an input, used in error messages and records."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    if isinstance(image, np.ndarray):
        return f"<ndarray {image.shape} {image.dtype}>"
    return f"<{type(image).__name__}>"


def _to_rgb(img: Image.Image, source: str = "image") -> Image.Image:
    """Palette (GIF), greyscale, 16-bit greyscale, CMYK and alpha images become plain 8-bit RGB.

    16-bit greyscale keeps its high byte (0..65535 → 0..255), as Pillow itself reduces 16-bit RGB;
    ``convert`` would clip everything above 255 to white. Float pixels have no agreed range: refused.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(source, f"{img.mode} pixels outside 0..65535; convert it to 8 or 16 bits per channel")
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise ImageDecodeError(source, "floating-point pixels have no agreed range; convert it to 8 or 16 bits per channel")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow wants palette transparency expanded first
    # Like torchvision's default loader, alpha is dropped (not composited) so training matches.
    return img.convert("RGB")


def _open_regular(path: str) -> io.BufferedReader:
    """``path`` opened for reading, if it is a regular file: a FIFO or a device would block or never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        raise ImageDecodeError(path, "not a regular file (a FIFO, device or socket); only regular files are read")
    return os.fdopen(fd, "rb")


def _budget_draft(full: tuple[int, int], limits: ImageLimits) -> tuple[int, int] | None:
    """The JPEG draft size that brings a picture over the pixel budget within it (1/2, 1/4 or 1/8), if one does."""
    for scale in (2, 4, 8):
        size = (-(-full[0] // scale), -(-full[1] // scale))
        if size[0] * size[1] <= limits.max_pixels:
            return size
    return None


def _decode(fp: object, source: str, draft_shorter: int | None = None,
            limits: ImageLimits = DEFAULT_LIMITS) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded RGB image and the full (EXIF-oriented) size of the picture in the file.

    With ``draft_shorter`` a JPEG is decoded DCT-domain downscaled (1/2, 1/4, 1/8) to the smallest
    size that still keeps its shorter side ≥ ``draft_shorter``, so the resize that follows stays a
    downscale; the decoded image is then smaller than the full size. A JPEG over the pixel budget is
    draft-decoded within it (on every path); any other picture over it is refused before decoding.
    Only ``ALLOWED_FORMATS`` are opened, whatever the file is named.
    """
    try:
        with warnings.catch_warnings():
            # A picture above Pillow's MAX_IMAGE_PIXELS is a decompression bomb on a device.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle = _open_regular(fp) if isinstance(fp, str) else fp
            with handle, Image.open(handle, formats=ALLOWED_FORMATS) as img:
                full = img.size
                is_jpeg = img.format in ("JPEG", "MPO")
                if max(full) / max(min(full), 1) > limits.max_aspect or not is_jpeg:
                    limits.check(*full, source)  # refused before a single pixel is decoded
                draft = resized_size(*full, draft_shorter) if draft_shorter and is_jpeg else None
                if is_jpeg and full[0] * full[1] > limits.max_pixels:
                    budget = _budget_draft(full, limits)
                    if budget is None:
                        limits.check(*full, source)
                    draft = budget if draft is None or budget[0] * budget[1] < draft[0] * draft[1] else draft
                if draft:
                    img.draft("RGB", draft)
                img.load()  # force the full decode now: truncated files fail here, not later
                before = img.size
                img = ImageOps.exif_transpose(img)  # phone photos: honour the EXIF orientation
                if img.size != before:  # rotated by 90°: the full size turns with it
                    full = full[::-1]
                return _to_rgb(img, source), full
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(source, "file not found; check the path") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(source, "is a directory, not an image file") from exc
    except UnidentifiedImageError as exc:
        size = os.path.getsize(source) if isinstance(fp, (str, os.PathLike)) and os.path.isfile(source) else None
        what = "empty file (0 bytes)" if size == 0 else f"not an image in an accepted format ({', '.join(ALLOWED_FORMATS)})"
        raise ImageDecodeError(source, f"{what}; remove it or replace it with a JPEG/PNG") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            source, f"refused as a possible decompression bomb ({exc}); downscale the image first"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise ImageDecodeError(source, f"corrupt or truncated image ({exc}); re-encode or remove it") from exc


def load_image(image: ImageInput, color: str | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Return an RGB PIL image from a path, encoded bytes, a PIL image or an HxWx3 uint8 array.

    ``color`` must be given for arrays: ``"rgb"`` or ``"bgr"`` (OpenCV frames are BGR). Guessing
    would silently swap channels, the classic deploy-time accuracy bug. The trainer decodes through
    this too, so the accepted formats, the pixel budget and 16-bit handling are the same on both sides.
    """
    return _load(image, color, limits=limits)[0]


def _load(image: ImageInput, color: str | None, draft_shorter: int | None = None,
          limits: ImageLimits = DEFAULT_LIMITS) -> tuple[Image.Image, tuple[int, int]]:
    if isinstance(image, Image.Image):
        limits.check(*image.size, describe_source(image))
        return _to_rgb(image, describe_source(image)), image.size
    if isinstance(image, (str, os.PathLike)):
        return _decode(os.fspath(image), os.fspath(image), draft_shorter, limits)
    if isinstance(image, (bytes, bytearray)):
        return _decode(io.BytesIO(image), describe_source(image), draft_shorter, limits)
    if isinstance(image, np.ndarray):
        if image.ndim in (2, 3):
            limits.check(image.shape[1], image.shape[0], describe_source(image))
        img = _array_to_image(image, color)
        return img, img.size
    raise TypeError(
        f"unsupported image type {type(image).__name__}; pass a path, bytes, a PIL image or an ndarray"
    )


def _array_to_image(array: np.ndarray, color: str | None) -> Image.Image:
    source = describe_source(array)
    if color not in ("rgb", "bgr"):
        raise ImageDecodeError(source, "pass color='rgb' or color='bgr' with an ndarray (OpenCV frames are BGR)")
    if array.dtype != np.uint8:
        raise ImageDecodeError(source, "ndarray must be uint8 in 0..255; convert it with .astype(np.uint8)")
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageDecodeError(source, "ndarray must be HxW, HxWx3 or HxWx4")
    array = array[:, :, :3]
    if color == "bgr":
        array = array[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter``, truncating like torchvision."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def crop_box(width: int, height: int, crop_h: int, crop_w: int) -> tuple[int, int, int, int]:
    """The centre-crop box (left, top, right, bottom) with torchvision's rounding."""
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return left, top, left + crop_w, top + crop_h


def preprocess(image: ImageInput, contract: PreprocessContract, color: str | None = None,
               limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """One image → the model's ``(3, H, W)`` float32 input, exactly as the contract says."""
    img = load_image(image, color, limits)
    crop_h, crop_w = contract.input_size
    resample = _RESAMPLE[contract.interpolation]
    if contract.center_crop:
        new_w, new_h = resized_size(img.width, img.height, contract.resize_size)
        limits.check(new_w, new_h, describe_source(image), what="the resized image")
        if (new_w, new_h) != img.size:
            img = img.resize((new_w, new_h), resample)
        img = img.crop(crop_box(new_w, new_h, crop_h, crop_w))
    elif img.size != (crop_w, crop_h):
        img = img.resize((crop_w, crop_h), resample)  # no crop: squash the whole frame
    array = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(contract.mean, dtype=np.float32)
    std = np.asarray(contract.std, dtype=np.float32)
    array = (array - mean) / std
    return np.ascontiguousarray(array.transpose(2, 0, 1))


#: Pillow's ``reducing_gap``: a first integer ``reduce()`` while the scale is still ≥ 3×, then a
#: proper resample; Pillow documents 3.0 as indistinguishable from the full resample in most cases.
FAST_REDUCING_GAP = 3.0


def preprocess_fast(image: ImageInput, contract: PreprocessContract, color: str | None = None,
                    limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The contract's tensor, computed the fast way: most of the time goes to decoding, not inference.

    JPEGs are decoded DCT-domain downscaled (``Image.draft``) while still ≥ the resize size; only
    the centre-crop region is resampled (``resize(box=…)``, the same filter taps as resize-then-crop)
    with a ``reduce()`` first where the scale is large. Top-1 agreement with ``preprocess`` is
    measured in ``benchmarks/runtime_speed.py``; ``preprocess`` stays the exact reference.
    """
    shorter = contract.resize_size if contract.center_crop else min(contract.input_size)
    img, (full_w, full_h) = _load(image, color, shorter, limits)
    crop_h, crop_w = contract.input_size
    resample = _RESAMPLE[contract.interpolation]
    if contract.center_crop:
        new_w, new_h = resized_size(full_w, full_h, contract.resize_size)
        left, top, right, bottom = crop_box(new_w, new_h, crop_h, crop_w)
        sx, sy = img.width / new_w, img.height / new_h  # resized coordinates → decoded pixels
        box = (left * sx, top * sy, right * sx, bottom * sy)
    else:
        box = (0, 0, img.width, img.height)
    if box != (0, 0, crop_w, crop_h) or img.size != (crop_w, crop_h):
        img = img.resize((crop_w, crop_h), resample, box=box, reducing_gap=FAST_REDUCING_GAP)
    return _normalize_planar(np.asarray(img), contract)


def _normalize_planar(pixels: np.ndarray, contract: PreprocessContract) -> np.ndarray:
    """HxWx3 uint8 → (3, H, W) float32 ``(x/255 - mean)/std`` as one multiply-add per channel plane,
    written straight into CHW order, which avoids a float HWC copy and its transpose."""
    std = np.asarray(contract.std, dtype=np.float32)
    scale = np.float32(1.0) / (np.float32(255.0) * std)
    shift = np.asarray(contract.mean, dtype=np.float32) / std
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.multiply(pixels[:, :, c], scale[c], out=out[c], casting="unsafe")
        out[c] -= shift[c]
    return out


def preprocess_files(
    paths: Sequence[str | os.PathLike], contract: PreprocessContract
) -> tuple[np.ndarray, list[Path], list[str]]:
    """Stack the decodable ``paths`` into one ``(N, 3, H, W)`` batch; undecodable ones are listed
    as ``"path: reason"`` instead of stopping the batch."""
    arrays, kept, skipped = [], [], []
    for path in paths:
        try:
            arrays.append(preprocess(path, contract))
            kept.append(Path(path))
        except ImageDecodeError as exc:
            skipped.append(f"{path}: {exc.reason}")
    shape = (0, 3, *contract.input_size)
    return (np.stack(arrays) if arrays else np.zeros(shape, np.float32)), kept, skipped
