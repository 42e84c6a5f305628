"""edge-predict as subcommands (classify, serve, self-test), the flat form scripts already use, and the camera box
configured from one TOML file: the same stream loop and the same records whichever way it was started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.runtime.cli import main as predict_main
from edgeport.runtime.errors import ExitCode
from PIL import Image

from .test_service import colour_video
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("commands") / "bundle")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, rgb in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)] * 3):
        path = folder / f"{i:02d}.png"
        Image.new("RGB", (96, 80), rgb).save(path)
        paths.append(path)
    return paths


def _records(output: str) -> list[dict]:
    """The JSON lines of an output, latency left out (it is timing, not the answer)."""
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [{k: v for k, v in row.items() if k != "latency_ms"} for row in rows]


def test_classify_and_the_flat_form_print_the_same_records(bundle, photos):
    runner = CliRunner()
    args = [str(bundle), *map(str, photos), "--output-format", "jsonl", "-k", "2"]
    flat, sub = runner.invoke(predict_main, args), runner.invoke(predict_main, ["classify", *args])
    assert flat.exit_code == 0 and sub.exit_code == 0, flat.output + sub.output
    assert _records(flat.output) == _records(sub.output)
    records = _records(sub.output)
    assert [r["source"] for r in records] == [str(p) for p in photos]  # in the order given
    assert [r["label"] for r in records] == ["red", "green", "blue"] * 3
    assert all("source_id" not in r for r in records)  # one source: no ids, as before


def test_batches_give_the_same_answers_as_one_frame_at_a_time(bundle, photos):
    one = CliRunner().invoke(predict_main, ["classify", str(bundle), *map(str, photos), "--format", "jsonl"])
    four = CliRunner().invoke(predict_main, ["classify", str(bundle), *map(str, photos), "--format", "jsonl", "--batch", "4"])
    assert one.exit_code == four.exit_code == 0
    strip = lambda rows: [{**r, "top_k": [(e["label"], round(e["score"], 5)) for e in r["top_k"]]} for r in rows]  # noqa: E731
    assert strip(_records(one.output)) == strip(_records(four.output))


def test_classify_refuses_several_sources_and_names_serve(bundle, tmp_path):
    video = colour_video(tmp_path / "v.avi", ["red"] * 3)
    result = CliRunner().invoke(predict_main, ["classify", str(bundle), "--video", str(video), "--video", str(video)])
    assert result.exit_code == ExitCode.USAGE and "edge-predict serve" in result.output


def test_the_help_lists_the_subcommands_and_no_subcommand_is_a_model(bundle):
    help_text = CliRunner().invoke(predict_main, ["--help"]).output
    assert all(name in help_text for name in ("classify", "serve", "self-test")) and "flat" not in help_text
    missing = CliRunner().invoke(predict_main, ["no-such-model", "x.jpg"])
    assert missing.exit_code == ExitCode.USAGE and "no-such-model" in missing.output


def _box(tmp_path: Path, bundle: Path, videos: dict[str, Path], extra: str = "") -> Path:
    lines = [f'model = "{bundle}"', "[output]", 'format = "jsonl"', "top_k = 1", extra]
    for name, video in videos.items():
        lines += [f"[sources.{name}]", f'video = "{video.name}"']  # relative: to the file's folder
    path = tmp_path / "box.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_serve_from_a_config_file_runs_the_sources_as_the_flags_do(bundle, tmp_path):
    """Real processes: the file form and the flags form of the same two-camera box give the same records."""
    a = colour_video(tmp_path / "a.avi", ["red", "green", "blue"] * 4)
    b = colour_video(tmp_path / "b.avi", ["blue"] * 7)
    config = _box(tmp_path, bundle, {"door": a, "yard": b})
    from_file = subprocess.run([BIN / "edge-predict", "serve", "--config", config], capture_output=True, text=True,
                               timeout=120, cwd="/")
    from_flags = subprocess.run([BIN / "edge-predict", "serve", bundle, "--video", a, "--name", f"door={a}", "--video", b,
                                 "--name", f"yard={b}", "--output-format", "jsonl", "-k", "1", "--batch", "auto"],
                                capture_output=True, text=True, timeout=120)
    assert from_file.returncode == 0, from_file.stderr
    assert from_flags.returncode == 0, from_flags.stderr
    by_source = lambda rows: {s: [r for r in rows if r.get("source_id") == s and "frame" in r] for s in ("door", "yard")}  # noqa: E731
    file_rows, flag_rows = by_source(_records(from_file.stdout)), by_source(_records(from_flags.stdout))
    assert file_rows == flag_rows
    assert [r["label"] for r in file_rows["door"]] == ["red", "green", "blue"] * 4
    assert [r["frame"] for r in file_rows["yard"]] == list(range(7))
    assert "2 sources" in from_file.stderr


def test_check_validates_the_file_and_names_a_bad_keys_line(bundle, tmp_path):
    a = colour_video(tmp_path / "a.avi", ["red"] * 2)
    good = _box(tmp_path, bundle, {"door": a})
    ok = CliRunner().invoke(predict_main, ["serve", "--config", str(good), "--check"])
    assert ok.exit_code == 0 and "door" in ok.output, ok.output
    text = good.read_text().replace('video = "a.avi"', 'video = "a.avi"\nevry = 2')
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    line = text.splitlines().index("evry = 2") + 1
    result = subprocess.run([BIN / "edge-predict", "serve", "--config", bad, "--check"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == ExitCode.USAGE
    assert f"{bad}:{line}: [sources.door] evry: unknown key" in result.stderr, result.stderr


def test_flags_that_belong_in_the_file_are_refused_beside_it(bundle, tmp_path):
    a = colour_video(tmp_path / "a.avi", ["red"] * 2)
    config = _box(tmp_path, bundle, {"door": a})
    result = CliRunner().invoke(predict_main, ["serve", "--config", str(config), "--video", str(a), "--top-k", "2"])
    assert result.exit_code == ExitCode.USAGE
    assert "--video" in result.output and "--top-k" in result.output and str(config) in result.output


def test_self_test_subcommand_and_flat_flag_agree(imagenet_bundle):
    sub = CliRunner().invoke(predict_main, ["self-test", str(imagenet_bundle), "--output-format", "jsonl"])
    flat = CliRunner().invoke(predict_main, [str(imagenet_bundle), "--self-test", "--output-format", "jsonl"])
    assert sub.exit_code == flat.exit_code == 0, sub.output + flat.output
    reports = [json.loads(out.output) for out in (sub, flat)]
    assert reports[0]["passed"] and [f["format"] for f in reports[0]["formats"]] == [f["format"] for f in reports[1]["formats"]]


def test_a_removed_method_names_its_replacement(bundle):
    from edgeport.runtime import Classifier

    clf = Classifier(bundle)
    for name, replacement in (("stream", "classify_stream"), ("self_test", "conformance.self_test"),
                              ("reload", "reload_now"), ("auto_reload", "HotReloader")):
        with pytest.raises(AttributeError, match=replacement):
            getattr(clf, name)
    assert np.isfinite(clf.scores([np.zeros((8, 8, 3), np.uint8)], color="rgb")).all()  # the core API is untouched
