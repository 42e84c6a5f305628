"""Shared, session-scoped real artefacts: one ImageNet export and one hymenoptera fine-tune."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HYMENOPTERA = Path(os.environ.get("EDGEPORT_HYMENOPTERA", REPO.parent / "shared" / "data" / "hymenoptera"))


#: Session fixtures that train or export a real model: a test that uses one (directly or through another
#: fixture) is ``slow``, so ``pytest -m "not slow"`` is the fast loop (runtime, contract, CLI parsing, errors).
HEAVY_FIXTURES = {"imagenet_bundle", "finetuned_run", "finetuned_bundle"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def isolated_torch_home(tmp_path_factory):
    """An empty hub cache, so every session exercises the offline weight lookup for real."""
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    yield Path(os.environ["TORCH_HOME"])
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def hymenoptera() -> Path:
    if not (HYMENOPTERA / "train").is_dir():
        if os.environ.get("EDGEPORT_REQUIRE_DATA"):
            pytest.fail(f"hymenoptera data missing at {HYMENOPTERA} (EDGEPORT_REQUIRE_DATA is set)")
        pytest.skip(f"hymenoptera data not found at {HYMENOPTERA}; set EDGEPORT_HYMENOPTERA")
    return HYMENOPTERA


@pytest.fixture(scope="session")
def hymenoptera_val_jpegs(hymenoptera) -> list[Path]:
    files = sorted((hymenoptera / "val").rglob("*.jpg"))
    assert len(files) == 153, f"expected the 153 val JPEGs of the tutorial dataset, found {len(files)}"
    return files


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    from edgeport.export.samples import packaged_photos

    return packaged_photos()


@pytest.fixture(scope="session")
def imagenet_bundle(tmp_path_factory) -> Path:
    """torchvision's ImageNet MobileNetV2, exported and verified: the `make demo` path."""
    from edgeport.export import export_bundle

    out = tmp_path_factory.mktemp("imagenet") / "mobilenet_v2"
    export_bundle("torchvision:mobilenet_v2", out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def finetuned_run(tmp_path_factory, hymenoptera):
    """One brief MobileNetV2 fine-tune on hymenoptera for the whole session."""
    from edgeport.trainer import TrainConfig, fit

    out = tmp_path_factory.mktemp("run")
    return fit(hymenoptera, out, TrainConfig(arch="mobilenet_v2", freeze_epochs=1, epochs=1, seed=0), progress=False)


@pytest.fixture(scope="session")
def finetuned_bundle(tmp_path_factory, finetuned_run, hymenoptera) -> Path:
    """The fine-tune in every format: FP32 ONNX, INT8 ONNX, OpenVINO FP32 and NNCF INT8."""
    from edgeport.export import export_bundle

    out = tmp_path_factory.mktemp("ft") / "bundle"
    export_bundle(str(finetuned_run.best_path), out, formats="onnx,onnx-int8,openvino,openvino-int8",
                  calib_dir=hymenoptera / "train", calib_size=50, log=lambda _: None)
    return out
