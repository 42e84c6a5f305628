"""``edge-train DATA --init-from RUN/best.pt --new-frames DIR``: the deployed weights are the start (its "before"
accuracy on DATA's val is the deployed run's own), the new frames split per class by the seed, and before/after
lines on both val parts (metrics.json keeps them)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from edgeport.runtime.errors import DataError, UsageError
from edgeport.trainer.cli import main
from edgeport.trainer.data import scan_image_folder
from edgeport.trainer.init_from import add_new_frames, load_init_weights
from edgeport.trainer.models import build_pretrained, replace_head


def _reviewed(root, hymenoptera, n=6):
    """A review page's dataset: real photos in ants/ and bees/, and one marked unknown (a dot folder)."""
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for src in sorted((hymenoptera / "train" / cls).glob("*.jpg"))[-n:]:
            shutil.copy(src, root / cls / f"door_{src.name}")
    (root / ".unknown").mkdir()
    shutil.copy(next((hymenoptera / "train" / "ants").glob("*.jpg")), root / ".unknown" / "x.jpg")
    return root


def test_new_frames_split_by_seed_and_checked(hymenoptera, tmp_path):
    split = scan_image_folder(hymenoptera)
    reviewed = _reviewed(tmp_path / "reviewed", hymenoptera)
    merged = add_new_frames(split, reviewed, 0.34, seed=0)
    assert merged.val[: len(split.val)] == split.val and merged.train[: len(split.train)] == split.train  # old split kept
    new_val = merged.val[len(split.val):]
    assert len(new_val) == 4 and len(merged.train) - len(split.train) == 8  # round(6 × 0.34) = 2 per class
    assert all(".unknown" not in str(p) for p, _ in merged.train + merged.val)
    assert add_new_frames(split, reviewed, 0.34, seed=0).val == merged.val  # the same seed, the same share
    (reviewed / "wasps").mkdir()
    with pytest.raises(DataError, match=r"classes \['wasps'\] that the data and the model do not have"):
        add_new_frames(split, reviewed, 0.2, seed=0)


def test_init_from_refuses_another_model(finetuned_run):
    model = build_pretrained("mobilenet_v2")
    replace_head(model, 3)
    with pytest.raises(UsageError, match="trained on classes"):
        load_init_weights(model, finetuned_run.best_path, "mobilenet_v2", ["ants", "bees", "wasps"], "linear")
    with pytest.raises(UsageError, match="is a mobilenet_v2; train with --arch mobilenet_v2"):
        load_init_weights(model, finetuned_run.best_path, "efficientnet_lite0", ["ants", "bees"], "linear")


def test_edge_train_init_from_prints_before_and_after(finetuned_run, hymenoptera, tmp_path):
    reviewed = _reviewed(tmp_path / "reviewed", hymenoptera)
    result = CliRunner().invoke(main, [str(hymenoptera), "--init-from", str(finetuned_run.best_path), "--new-frames",
                                       str(reviewed), "--freeze-epochs", "1", "--epochs", "0", "--valid-pct", "0.34",
                                       "--seed", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    before = next(line for line in result.output.splitlines() if line.startswith("--init-from, before"))
    deployed = finetuned_run.best["val_accuracy"]
    correct = round(deployed * 153)
    assert f"old val {deployed:.4f} ({correct}/153)" in before  # the deployed weights, measured on their own val
    assert "new frames val" in before and "/4)" in before
    assert any(line.startswith("--init-from, after (best epoch") for line in result.output.splitlines())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    parts = metrics["init_from"]
    assert parts["before"]["old_val"]["total"] == 153 and parts["after"]["new_val"]["total"] == 4
    assert metrics["data"]["val_counts"] == {"ants": 72, "bees": 85} and metrics["config"]["init_from"]
