import shutil

import pytest
from edgeport.runtime.errors import DataError
from edgeport.trainer.data import scan_image_folder

from .helpers import text_as_jpeg, truncated_jpeg


def test_train_val_layout_of_hymenoptera(hymenoptera):
    split = scan_image_folder(hymenoptera)
    assert split.classes == ["ants", "bees"]
    assert len(split.train) == 245 and len(split.val) == 153  # the GIF decodes, so it is kept
    assert split.skipped == []


def _class_folder(tmp_path, hymenoptera, n=10):
    root = tmp_path / "flat"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:n]:
            shutil.copy(f, root / cls / f.name)
    return root


def test_flat_folder_split_is_stratified_and_reproducible(tmp_path, hymenoptera):
    root = _class_folder(tmp_path, hymenoptera)
    a = scan_image_folder(root, valid_pct=0.3, seed=1)
    b = scan_image_folder(root, valid_pct=0.3, seed=1)
    c = scan_image_folder(root, valid_pct=0.3, seed=2)
    assert a.val == b.val and a.train == b.train
    assert a.val != c.val
    assert a.report()["val_counts"] == {"ants": 3, "bees": 3}
    assert not set(a.val) & set(a.train)


def test_undecodable_files_are_skipped_and_reported(tmp_path, hymenoptera):
    root = _class_folder(tmp_path, hymenoptera, n=4)
    truncated_jpeg(root / "ants" / sorted((root / "ants").iterdir())[0].name, root / "ants" / "broken.jpg")
    text_as_jpeg(root / "bees" / "text.jpg")
    (root / "bees" / "README.txt").write_text("notes")
    split = scan_image_folder(root, valid_pct=0.25)
    reasons = {item["path"].split("/")[-1]: item["reason"] for item in split.skipped}
    assert set(reasons) == {"broken.jpg", "text.jpg", "README.txt"}
    assert "truncated" in reasons["broken.jpg"] and "not an image" in reasons["text.jpg"]
    assert len(split.train) + len(split.val) == 8


def test_empty_class_and_single_class_are_errors_that_name_the_folder(tmp_path, hymenoptera):
    root = _class_folder(tmp_path, hymenoptera, n=3)
    (root / "wasps").mkdir()
    with pytest.raises(DataError, match="wasps.*no decodable images"):
        scan_image_folder(root)
    shutil.rmtree(root / "wasps")
    shutil.rmtree(root / "bees")
    with pytest.raises(DataError, match="at least 2"):
        scan_image_folder(root)
