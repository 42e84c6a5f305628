"""edge-predict / edge-export / edge-train as users run them: CliRunner, and once as real processes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from edgeport.export.cli import main as export_main
from edgeport.runtime.cli import main as predict_main
from edgeport.trainer.cli import main as train_main

from .helpers import empty_file, text_as_jpeg, truncated_jpeg

BIN = Path(sys.executable).parent


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bad_inputs_get_error_records_and_the_rest_is_classified(imagenet_bundle, hymenoptera, tmp_path):
    good = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:3]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    truncated = truncated_jpeg(good[0], bad_dir / "truncated.jpg")
    text = text_as_jpeg(bad_dir / "text.jpg")
    zero = empty_file(bad_dir / "zero.jpg")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    args = [str(imagenet_bundle), str(good[0]), str(truncated), str(empty), str(text), str(zero), str(tmp_path / "nope.jpg"),
            *map(str, good[1:]), "--format", "jsonl"]
    result = CliRunner().invoke(predict_main, args)
    assert result.exit_code == 6, result.output  # ExitCode.SOME_INPUTS_FAILED
    records = _records(result.stdout)
    assert [r["source"] for r in records] == args[1:-2]  # one record per input, in order
    by_source = {r["source"]: r for r in records}
    assert all(by_source[str(p)]["ok"] for p in good)
    assert "truncated" in by_source[str(truncated)]["error"]
    assert "not an image" in by_source[str(text)]["error"]
    assert "0 bytes" in by_source[str(zero)]["error"]
    assert "no images found in folder" in by_source[str(empty)]["error"]
    assert "no such file" in by_source[str(tmp_path / "nope.jpg")]["error"]
    assert "3 classified, 5 failed" in result.stderr


def test_folder_input_is_recursive_sorted_and_batched(imagenet_bundle, hymenoptera):
    folder = hymenoptera / "val" / "ants"
    result = CliRunner().invoke(predict_main, [str(imagenet_bundle), str(folder), "--format", "jsonl", "--batch", "8", "-k", "2"])
    assert result.exit_code == 0, result.output
    records = _records(result.stdout)
    assert [r["source"] for r in records] == sorted(str(p) for p in folder.rglob("*.jpg"))
    assert all(len(r["top_k"]) == 2 and r["latency_ms"] > 0 for r in records)


def test_paths_on_stdin(imagenet_bundle, sample_photos):
    stdin = "\n".join(map(str, sample_photos)) + "\n"
    result = CliRunner().invoke(predict_main, [str(imagenet_bundle), "-", "--format", "jsonl"], input=stdin)
    assert result.exit_code == 0, result.output
    assert [r["source"] for r in _records(result.stdout)] == list(map(str, sample_photos))


def test_model_errors_are_usage_errors(imagenet_bundle, tmp_path, sample_photos):
    runner = CliRunner()
    missing = runner.invoke(predict_main, [str(tmp_path / "nope"), str(sample_photos[0])])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    tampered = tmp_path / "bundle"
    shutil.copytree(imagenet_bundle, tampered)
    (tampered / "labels.txt").write_text("x")  # not the model: still fine
    (tampered / "model.onnx").write_bytes((tampered / "model.onnx").read_bytes()[:-10])
    result = runner.invoke(predict_main, [str(tampered), str(sample_photos[0])])
    assert result.exit_code == 2 and "sha256" in result.output


def test_edge_predict_demo_as_a_real_process(imagenet_bundle, sample_photos):
    """The `make demo` path: top-5 per packaged photo in a table; the cat photo shows a cat class."""
    out = subprocess.run([str(BIN / "edge-predict"), str(imagenet_bundle), *map(str, sample_photos)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    chelsea_block = out.stdout.split("chelsea.png")[1].split("coffee.png")[0]
    assert any(cat in chelsea_block for cat in ("tabby", "tiger cat", "Egyptian cat"))
    assert out.stdout.count("%") == 5 * len(sample_photos)


def test_edge_export_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(export_main, [str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "does not exist" in result.output
    not_a_ckpt = tmp_path / "x.pt"
    not_a_ckpt.write_bytes(b"garbage")
    result = runner.invoke(export_main, [str(not_a_ckpt), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "not a loadable edgeport checkpoint" in result.output
    result = runner.invoke(export_main, ["torchvision:vgg_nope", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "unknown architecture" in result.output
    out = subprocess.run([str(BIN / "edge-export"), str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert not (tmp_path / "b").exists()


def test_edge_train_help_and_data_errors(tmp_path, hymenoptera):
    runner = CliRunner()
    help_text = runner.invoke(train_main, ["--help"]).output
    for option in ("--arch", "--epochs", "--freeze-epochs", "--lr", "--batch-size", "--valid-pct", "--seed", "--out"):
        assert option in help_text
    one_class = tmp_path / "one"
    (one_class / "ants").mkdir(parents=True)
    shutil.copy(sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[0], one_class / "ants")
    result = runner.invoke(train_main, [str(one_class), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "at least 2" in result.output  # a DataError is a usage error everywhere
