"""Decode any image to RGB and apply the contract with numpy + Pillow only.

This reproduces torchvision's eval transform ``Resize(s) → CenterCrop(c) → ToTensor → Normalize``
operation for operation on PIL images (torchvision resizes PIL images with Pillow itself), so the
device computes the same tensor the trainer evaluated — checked file by file in the parity test.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .contract import PreprocessContract
from .errors import ImageDecodeError

__all__ = [
    "ImageInput",
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


def _to_rgb(img: Image.Image) -> Image.Image:
    """Palette (GIF), greyscale, CMYK and alpha images become plain 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow wants palette transparency expanded first
    # Like torchvision's default loader, alpha is dropped (not composited) so training matches.
    return img.convert("RGB")


def _decode(fp: object, source: str, draft_shorter: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded RGB image and the full (EXIF-oriented) size of the picture in the file.

    With ``draft_shorter`` a JPEG is decoded DCT-domain downscaled (1/2, 1/4, 1/8) to the smallest
    size that still keeps its shorter side ≥ ``draft_shorter``, so the resize that follows stays a
    downscale; the decoded image is then smaller than the full size.
    """
    try:
        with warnings.catch_warnings():
            # A picture above Pillow's MAX_IMAGE_PIXELS is a decompression bomb on a device.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                full = img.size
                if draft_shorter and img.format == "JPEG":
                    img.draft("RGB", resized_size(*full, draft_shorter))
                img.load()  # force the full decode now: truncated files fail here, not later
                before = img.size
                img = ImageOps.exif_transpose(img)  # phone photos: honour the EXIF orientation
                if img.size != before:  # rotated by 90°: the full size turns with it
                    full = full[::-1]
                return _to_rgb(img), full
    except FileNotFoundError as exc:
        raise ImageDecodeError(source, "file not found; check the path") from exc
    except IsADirectoryError as exc:
        raise ImageDecodeError(source, "is a directory, not an image file") from exc
    except UnidentifiedImageError as exc:
        size = os.path.getsize(source) if isinstance(fp, (str, os.PathLike)) and os.path.isfile(source) else None
        what = "empty file (0 bytes)" if size == 0 else "not an image Pillow can decode"
        raise ImageDecodeError(source, f"{what}; remove it or replace it with a JPEG/PNG") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(
            source, f"refused as a possible decompression bomb ({exc}); downscale the image first"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise ImageDecodeError(source, f"corrupt or truncated image ({exc}); re-encode or remove it") from exc


def load_image(image: ImageInput, color: str | None = None) -> Image.Image:
    """Return an RGB PIL image from a path, encoded bytes, a PIL image or an HxWx3 uint8 array.

    ``color`` must be given for arrays: ``"rgb"`` or ``"bgr"`` (OpenCV frames are BGR). Guessing
    would silently swap channels, the classic deploy-time accuracy bug.
    """
    return _load(image, color)[0]


def _load(image: ImageInput, color: str | None, draft_shorter: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    if isinstance(image, Image.Image):
        return _to_rgb(image), image.size
    if isinstance(image, (str, os.PathLike)):
        return _decode(os.fspath(image), os.fspath(image), draft_shorter)
    if isinstance(image, (bytes, bytearray)):
        return _decode(io.BytesIO(image), describe_source(image), draft_shorter)
    if isinstance(image, np.ndarray):
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


def preprocess(image: ImageInput, contract: PreprocessContract, color: str | None = None) -> np.ndarray:
    """One image → the model's ``(3, H, W)`` float32 input, exactly as the contract says."""
    img = load_image(image, color)
    crop_h, crop_w = contract.input_size
    resample = _RESAMPLE[contract.interpolation]
    if contract.center_crop:
        new_w, new_h = resized_size(img.width, img.height, contract.resize_size)
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


def preprocess_fast(image: ImageInput, contract: PreprocessContract, color: str | None = None) -> np.ndarray:
    """The contract's tensor, computed the fast way: most of the time goes to decoding, not inference.

    JPEGs are decoded DCT-domain downscaled (``Image.draft``) while still ≥ the resize size; only
    the centre-crop region is resampled (``resize(box=…)``, the same filter taps as resize-then-crop)
    with a ``reduce()`` first where the scale is large. Top-1 agreement with ``preprocess`` is
    measured in ``benchmarks/runtime_speed.py``; ``preprocess`` stays the exact reference.
    """
    img, (full_w, full_h) = _load(image, color, contract.resize_size if contract.center_crop else min(contract.input_size))
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
