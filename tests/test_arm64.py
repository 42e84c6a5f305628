"""The pure parts of ``make arm64-check`` (tools.arm64_check / arm64_root): how records are keyed and
compared, the gate, the table, the CPU features and wheel platforms. The check itself needs root and an
emulated arm64 root (minutes): it is ``make arm64-check``, its last table in tools/README.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools.arm64_check import (
    AGREEMENT_GATE,
    Run,
    accuracy,
    compare,
    hwcap_features,
    parse_run,
    render_table,
)
from tools.arm64_root import mounts_under, platform_tags


def _jsonl(source: str, scores: dict[str, float], frame: int | None = None) -> str:
    record = {"source": source, **({"frame": frame, "timestamp": 0.0} if frame is not None else {}), "ok": True,
              "label": max(scores, key=scores.get),
              "top_k": [{"label": k, "score": v} for k, v in sorted(scores.items(), key=lambda kv: -kv[1])], "latency_ms": 1.0}
    return json.dumps(record)


def test_hwcap_bits_follow_the_kernel_header():
    # arch/arm64/include/uapi/asm/hwcap.h: HWCAP_ASIMD 1<<1, HWCAP_ASIMDDP 1<<20, HWCAP_SVE 1<<22; HWCAP2_I8MM 1<<13.
    assert hwcap_features(1 << 1 | 1 << 20 | 1 << 22, 1 << 13) == ["asimd", "asimddp", "sve", "i8mm"]
    assert hwcap_features(0, 0) == []


def test_wheel_platforms_cover_bookworms_glibc_down_to_manylinux2014():
    tags = platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64"  # Debian 12 / Raspberry Pi OS 12: glibc 2.36
    assert {"manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(tags)
    assert not any("x86_64" in tag or "_2_37_" in tag for tag in tags)


def test_photos_are_keyed_alike_on_both_machines_and_the_summary_is_read():
    host = parse_run(_jsonl("/data/h/val/ants/a.jpg", {"ants": 0.9, "bees": 0.1}), "", 0, "/data/h/")
    stderr = "1 classified, 0 failed, latency mean 2400.5 / p50 2386.0 / p90 2500.0 ms, 0.4 FPS (onnx on onnxruntime)"
    root = parse_run(_jsonl("/mnt/edgeport/data/val/ants/a.jpg", {"ants": 0.9000004, "bees": 0.0999996}), stderr, 0,
                     "/mnt/edgeport/data/")
    assert list(host.probs) == list(root.probs) == ["val/ants/a.jpg"]
    assert root.p50_ms == 2386.0 and host.p50_ms is None
    c = compare(host, root)
    assert (c.n, c.same_top1, c.missing) == (1, 1, 0) and c.max_delta == pytest.approx(4e-7)


def test_a_flipped_top1_a_missing_photo_and_failures_count_against_the_gate():
    ref = Run({"val/ants/a.jpg": {"ants": 0.6, "bees": 0.4}, "val/bees/b.jpg": {"ants": 0.2, "bees": 0.8},
               "val/bees/c.jpg": {"ants": 0.1, "bees": 0.9}}, 0, None)
    stdout = "\n".join([_jsonl("/r/val/ants/a.jpg", {"ants": 0.45, "bees": 0.55}), _jsonl("/r/val/bees/b.jpg", {"ants": 0.2, "bees": 0.8}),
                        json.dumps({"source": "/r/val/bees/c.jpg", "ok": False, "error": "decode"})])
    got = parse_run(stdout, "Error: boom", 3, "/r/")
    c = compare(ref, got)
    assert (c.n, c.same_top1, c.missing) == (3, 1, 1)
    assert c.agreement == pytest.approx(100 / 3) and c.agreement < AGREEMENT_GATE
    assert c.max_delta == pytest.approx(0.15)
    assert got.failed == 1 and got.error == "Error: boom"
    assert accuracy(got) == 50.0  # a.jpg (ants) called bees, b.jpg (bees) right: the folder is the label


def test_video_frames_are_keyed_by_number():
    run = parse_run("\n".join(_jsonl("clip.avi", {"ants": 0.7, "bees": 0.3}, frame=i) for i in range(3)), "", 0, "")
    assert list(run.probs) == ["0", "1", "2"]


def test_the_table_marks_failures_and_measured_only_rows():
    table = render_table([("a", "2", "top-1 equal 2/2", "", True), ("b", "2", "agreement 50%", "", False),
                          ("cpu", "–", "asimd", "", None)])
    rows = table.splitlines()[2:]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["yes", "NO", "–"]


def test_no_mount_is_reported_under_a_fresh_folder(tmp_path):
    assert mounts_under(tmp_path) == []


def test_the_check_refuses_a_data_folder_without_train_and_val(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tools.arm64_check", "--data", str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode != 0 and "has no train/ and val/" in done.stderr


def test_the_devices_page_unit_runs_on_the_clip_instead_of_a_camera(tmp_path):
    import cv2
    import numpy as np

    from tools.arm64_check import DEVICES_DOC, unit_command

    clip, bundle = tmp_path / "clip.avi", tmp_path / "empty-bundle"
    bundle.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    argv = unit_command(DEVICES_DOC, str(bundle), str(clip))
    assert argv[0] == "/opt/edgeport/bin/edge-predict" and argv[1] == str(bundle)
    assert "--camera" not in argv and argv[argv.index("--video") + 1] == str(clip)
    from click.testing import CliRunner
    from edgeport.runtime.cli import main

    # The unit's options parse with the real edge-predict and its video opens: only the empty bundle is refused.
    result = CliRunner().invoke(main, argv[1:])
    assert result.exit_code != 0 and "has no manifest.json" in result.output, result.output
