"""INT8 calibration data for every quantizer (onnxruntime's, NNCF on ONNX, NNCF on OpenVINO): which
images, through the runtime's own preprocessing (what the device will see)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import CalibrationError
from edgeport.runtime.inputs import iter_image_files
from edgeport.runtime.preprocess import preprocess_files

__all__ = ["select_calibration_images", "calibration_tensors", "CalibrationReader"]


def select_calibration_images(folder: Path, size: int) -> list[Path]:
    """``size`` images spread evenly over the sorted folder (every class represented, same set every run)."""
    files = iter_image_files(folder)
    if not files:
        raise CalibrationError(f"--calib {folder} holds no images; pass a folder of representative images (e.g. your train set)")
    if len(files) <= size:
        return files
    idx = np.linspace(0, len(files) - 1, size).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def calibration_tensors(images: Sequence[Path], contract: PreprocessContract) -> tuple[np.ndarray, dict[str, Any]]:
    """The calibration images through the runtime's preprocessing, for every INT8 quantizer, and the
    manifest's ``calibration`` entry (images used, undecodable ones with their reason)."""
    tensors, kept, skipped = preprocess_files(images, contract)
    if not kept:
        raise CalibrationError("no calibration image could be decoded; pass a folder of real images to --calib")
    return tensors, {"images": len(kept), "skipped": skipped}



class CalibrationReader:
    """onnxruntime's calibration reader over images already through the runtime's preprocessing, one
    per batch like the device, with a progress bar."""

    def __init__(self, tensors: np.ndarray, input_name: str):
        from tqdm.auto import tqdm

        self.tensors, self.index, self.input_name = tensors, 0, input_name
        self.bar = tqdm(total=len(tensors), desc="calibrating", leave=False)

    def get_next(self):
        if self.index >= len(self.tensors):
            self.bar.close()
            return None
        self.index += 1
        self.bar.update(1)
        return {self.input_name: self.tensors[self.index - 1 : self.index]}

    def rewind(self) -> None:
        self.index = 0
