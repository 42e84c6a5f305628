import shutil

import pytest
from edgeport.runtime.errors import DataError
from edgeport.trainer.data import scan_image_folder

from ..helpers import empty_file, text_as_jpeg, truncated_jpeg


def test_train_val_layout_of_hymenoptera(hymenoptera):
    split = scan_image_folder(hymenoptera)
    assert split.classes == ["ants", "bees"]
    assert len(split.train) == 245 and len(split.val) == 153  # the GIF decodes, so it is kept
    assert split.skipped == []
    assert split.class_table().splitlines() == ["class   train     val", "ants      124      70", "bees      121      83",
                                                "total     245     153"]
    assert split.imbalance_warning() is None


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


def _pets_style_folder(tmp_path, hymenoptera, n=6):
    """Oxford-Pets layout: one flat folder, the class in the file name (``ant_3.jpg``), as symlinks."""
    root = tmp_path / "pets"
    root.mkdir()
    for cls in ("ants", "bees"):
        for i, f in enumerate(sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:n]):
            (root / f"{cls[:-1]}_{i}.jpg").symlink_to(f)
    (root / "IMG-0001.jpg").symlink_to(sorted((hymenoptera / "train" / "ants").glob("*.jpg"))[-1])
    return root


def test_regex_labels_from_file_names_and_reports_non_matching_files(tmp_path, hymenoptera):
    root = _pets_style_folder(tmp_path, hymenoptera)
    split = scan_image_folder(root, valid_pct=0.5, seed=0, label_from=r"regex:^([A-Za-z_]+)_\d+")
    assert split.classes == ["ant", "bee"]
    assert split.counts(split.train) == {"ant": 3, "bee": 3} and split.counts(split.val) == {"ant": 3, "bee": 3}
    assert all(p.name.startswith(split.classes[y]) for p, y in split.train + split.val)
    assert split.skipped == [{"path": str(root / "IMG-0001.jpg"),
                              "reason": r"file name does not match --label-from regex '^([A-Za-z_]+)_\\d+'"}]


@pytest.mark.parametrize("spec, message", [("regex:^[a-z]+_", "capture group"), ("regex:([a-z", "does not compile"),
                                           ("name", "'folder' or 'regex:PATTERN'")])
def test_bad_label_from_is_an_error_that_says_what_is_expected(tmp_path, hymenoptera, spec, message):
    with pytest.raises(DataError, match=message):
        scan_image_folder(_class_folder(tmp_path, hymenoptera, n=2), label_from=spec)


def test_label_func_hook_on_a_train_val_layout(tmp_path, hymenoptera):
    """The Python hook: any callable Path → class name; None leaves the file out (listed as skipped)."""
    root = tmp_path / "data"
    for part in ("train", "val"):
        (root / part).mkdir(parents=True)
        for f in sorted((hymenoptera / part / "ants").glob("*.jpg"))[:8]:
            (root / part / f.name).symlink_to(f)
    (root / "train" / "placeholder.gif").symlink_to(hymenoptera / "train" / "ants" / "imageNotFound.gif")

    def by_size(path):
        return None if path.suffix == ".gif" else ("big" if path.stat().st_size > 100_000 else "small")

    split = scan_image_folder(root, label_func=by_size)
    assert split.classes == ["big", "small"]
    assert len(split.train) == 8 and len(split.val) == 8
    assert [s["path"].split("/")[-1] for s in split.skipped] == ["placeholder.gif"]
    assert all((p.stat().st_size > 100_000) == (y == 0) for p, y in split.train + split.val)


def test_class_table_and_heavy_imbalance_warning(tmp_path, hymenoptera):
    root = _class_folder(tmp_path, hymenoptera, n=12)
    for f in sorted((root / "bees").iterdir())[2:]:
        f.unlink()  # 12 ants : 2 bees → 10 : 1 in train after the split
    split = scan_image_folder(root, valid_pct=0.15, seed=0)
    assert split.counts(split.train) == {"ants": 10, "bees": 1}
    assert "heavy class imbalance: 'ants' has 10 train images, 'bees' only 1" in split.imbalance_warning()
    assert "--balance weights" in split.imbalance_warning()  # names the way out
    assert split.class_table().endswith("WARNING: " + split.imbalance_warning())
    assert split.report()["imbalance_warning"] == split.imbalance_warning()


def test_gif_named_jpg_is_decoded_by_content_and_a_zero_byte_file_is_skipped(tmp_path, hymenoptera):
    root = _class_folder(tmp_path, hymenoptera, n=3)
    shutil.copy(hymenoptera / "train" / "ants" / "imageNotFound.gif", root / "ants" / "placeholder.jpg")
    empty_file(root / "bees" / "zero.jpg")
    split = scan_image_folder(root, valid_pct=0.25)
    assert root / "ants" / "placeholder.jpg" in [p for p, _ in split.train + split.val]  # Pillow reads it as GIF
    assert [(s["path"].split("/")[-1], "0 bytes" in s["reason"]) for s in split.skipped] == [("zero.jpg", True)]
