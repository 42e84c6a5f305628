"""Large data sets: the cheap parallel scan, decode failures found by the loader, labels and splits from CSV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from edgeport.runtime.errors import DataError
from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.data import ImageListDataset, scan_image_folder
from edgeport.trainer.label_csv import split_from_csv
from edgeport.trainer.scan import check_image, check_images
from PIL import Image

from ..helpers import decompression_bomb, empty_file, text_as_jpeg, truncated_jpeg


def corrupt_png(src: Path, dst: Path) -> Path:
    """A PNG whose header and IEND are intact but whose pixel data is not: only a full decode finds it."""
    with Image.open(src) as image:
        image.convert("RGB").save(dst, format="PNG")
    data = bytearray(dst.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    dst.write_bytes(bytes(data))
    return dst


def _photos(hymenoptera: Path, split: str, cls: str, n: int) -> list[Path]:
    return sorted((hymenoptera / split / cls).glob("*.jpg"))[:n]


def test_header_scan_finds_what_it_can_and_defers_the_rest_to_a_decode(tmp_path, hymenoptera):
    good = _photos(hymenoptera, "train", "ants", 1)[0]
    files = {
        "good": good,
        "truncated": truncated_jpeg(good, tmp_path / "truncated.jpg"),  # no end marker: decoded, found
        "text": text_as_jpeg(tmp_path / "text.jpg"),
        "empty": empty_file(tmp_path / "empty.jpg"),
        "bomb": decompression_bomb(tmp_path / "bomb.png"),
        "corrupt_png": corrupt_png(good, tmp_path / "corrupt.png"),
    }
    header = {name: check_image(path, "header") for name, path in files.items()}
    full = {name: check_image(path, "full") for name, path in files.items()}
    assert header["good"] is None and full["good"] is None
    assert "truncated" in header["truncated"] and "not an image" in header["text"] and "empty" in header["empty"]
    assert "decompression bomb" in header["bomb"]
    assert header["corrupt_png"] is None and full["corrupt_png"] is not None  # left to the loader
    # the parallel scan answers in order, like one file at a time
    paths = list(files.values()) * 5
    assert check_images(paths, "header", threads=4) == [check_image(p, "header") for p in paths]


def test_loader_skips_and_records_an_undecodable_file(tmp_path, hymenoptera):
    photos = _photos(hymenoptera, "train", "ants", 3)
    bad = corrupt_png(photos[0], tmp_path / "bad.png")
    samples = [(photos[1], 0), (bad, 1), (photos[2], 0)]
    transform = lambda image: image.size  # noqa: E731 - the decode is what is tested
    train = ImageListDataset(samples, transform, substitute=True)
    item, label, failures = train[1]
    assert item == Image.open(photos[2]).size and label == 0  # the next sample took its place
    assert failures == [(str(bad), failures[0][1])] and failures[0][1]
    val = ImageListDataset(samples, transform, blank="blank")
    assert val[1][:2] == ("blank", -1) and val[1][2][0][0] == str(bad)  # left out of the metrics


@pytest.mark.slow
def test_training_survives_corrupt_files_and_reports_them(tmp_path, hymenoptera):
    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 4)):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for src in _photos(hymenoptera, split, cls, n):
                (root / split / cls / src.name).symlink_to(src)
    train_bad = corrupt_png(_photos(hymenoptera, "train", "ants", 7)[6], root / "train" / "ants" / "bad.png")
    val_bad = corrupt_png(_photos(hymenoptera, "val", "bees", 5)[4], root / "val" / "bees" / "bad.png")
    result = fit(root, tmp_path / "run", TrainConfig(strategy="head", freeze_epochs=1, epochs=0, batch_size=4, aug="none",
                                                     device="cpu", workers=1), progress=False)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    found = {item["path"]: item for item in report["skipped"]}
    assert set(found) == {str(train_bad), str(val_bad)} and {i["found"] for i in found.values()} == {"loader"}
    metrics = json.loads(result.metrics_path.read_text())
    assert sum(map(sum, metrics["confusion_matrix"])) == 8  # the 9th val file is left out, not counted
    assert str(val_bad) not in load_checkpoint(result.best_path)["val_files"]
    assert {i["path"] for i in metrics["skipped"]} == set(found)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def flat(tmp_path, hymenoptera) -> Path:
    """Photos in one folder under neutral names, as an export from a labelling tool leaves them."""
    root = tmp_path / "flat"
    (root / "img").mkdir(parents=True)
    for cls in ("ants", "bees"):
        for i, src in enumerate(_photos(hymenoptera, "train", cls, 5)):
            shutil.copy(src, root / "img" / f"{cls[0]}{i}.jpg")
    return root


def test_labels_csv_with_a_valid_column_fixes_the_split(flat):
    rows = [f"img/{c[0]}{i}.jpg,{c},{int(i == 0)}" for c in ("ants", "bees") for i in range(5)]
    _write(flat / "labels.csv", "path,label,valid\n" + "\n".join(rows + ["img/missing.jpg,ants,0"]) + "\n")
    split = split_from_csv(flat, "labels.csv")  # found inside DATA
    assert split.classes == ["ants", "bees"]
    assert [(p.name, y) for p, y in split.val] == [("a0.jpg", 0), ("b0.jpg", 1)]
    assert len(split.train) == 8 and not {p for p, _ in split.train} & {p for p, _ in split.val}
    assert [s["path"].endswith("missing.jpg") and "not found" in s["reason"] for s in split.skipped] == [True]


def test_labels_csv_with_a_val_csv_or_a_random_split(flat, tmp_path):
    rows = [f"img/{c[0]}{i}.jpg,{c}" for c in ("ants", "bees") for i in range(5)]
    labels = _write(tmp_path / "labels.csv", "path,label\n" + "\n".join(rows) + "\n")
    val_csv = _write(tmp_path / "val.csv", "path\nimg/a4.jpg\nimg/b3.jpg\n")
    fixed = split_from_csv(flat, labels, val_csv)
    assert sorted((p.name, y) for p, y in fixed.val) == [("a4.jpg", 0), ("b3.jpg", 1)] and len(fixed.train) == 8
    random = split_from_csv(flat, labels, valid_pct=0.4, seed=0)
    assert random.report()["val_counts"] == {"ants": 2, "bees": 2}


@pytest.mark.parametrize("text, match", [
    ("file,class\nimg/a0.jpg,ants\n", "lacks the column"),
    ("path,label,valid\nimg/a0.jpg,ants,maybe\n", "valid='maybe'"),
    ("path,label\nimg/a0.jpg,ants\nimg/a0.jpg,bees\n", "listed twice with different labels"),
    ("path,label\nimg/a0.jpg,ants\nimg/a1.jpg,ants\n", "at least 2"),
    ("path,label,valid\nimg/a0.jpg,ants,0\nimg/b0.jpg,bees,0\nimg/a1.jpg,wasps,1\n", "wasps"),
])
def test_bad_labels_csv_names_the_problem(flat, text, match):
    with pytest.raises(DataError, match=match):
        split_from_csv(flat, _write(flat / "labels.csv", text))


def test_labels_csv_reaches_the_config_and_scan_full_still_works(flat, tmp_path, hymenoptera):
    with pytest.raises(Exception, match="--val-csv goes with --labels-csv"):
        TrainConfig(val_csv="v.csv")
    with pytest.raises(Exception, match="use one of them"):
        TrainConfig(labels_csv="l.csv", label_from="regex:(a)")
    assert scan_image_folder(hymenoptera, scan="full").val == scan_image_folder(hymenoptera).val
