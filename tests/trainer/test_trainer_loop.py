"""The training loop: strategies and layer groups, LR finder, devices, determinism, reports, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from edgeport.runtime.errors import UsageError
from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.cli import main as train_main
from edgeport.trainer.devices import choose_precision, cpu_flags, default_workers, resolve_device
from edgeport.trainer.lr_find import lr_find, suggest_steep, suggest_valley
from edgeport.trainer.models import ARCHS, replace_head
from edgeport.trainer.recipe import DEFAULT
from edgeport.trainer.strategies import (
    discriminative_lrs,
    layer_blocks,
    layer_groups,
    plan_phases,
    set_trainable,
    train_mode,
)
from PIL import Image
from torch import nn
from torchvision import models as tvm

from ..helpers import hymenoptera_subset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, hymenoptera):
    """8 train + 4 val real photos per class, as symlinks: enough to exercise the loop in seconds."""
    return hymenoptera_subset(tmp_path_factory.mktemp("tiny"), hymenoptera, {"train": 8, "val": 4})


TINY = {"freeze_epochs": 1, "epochs": 0, "batch_size": 8, "seed": 0, "device": "cpu"}


# --- strategies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_layer_groups_partition_every_architecture(arch):
    model = tvm.get_model(arch, weights=None)
    groups = layer_groups(model)
    names = [p for g in groups for p in g.params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each parameter exactly once
    assert [g.name for g in groups] == ["body0", "body1", "body2", "head"]
    assert all(g.params for g in groups)
    blocks, head = layer_blocks(model)
    assert groups[-1].blocks == (head,) and len(blocks) >= 6
    # forward order: the first body group holds the stem, the last one the block next to the head
    assert groups[0].blocks[0] in ("features.0", "conv1") and groups[2].blocks[-1] == blocks[-1]


def test_discriminative_lrs_spread_geometrically_from_lr_over_mult():
    lrs = discriminative_lrs(4, 1e-3, 100.0)
    assert lrs[0] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([100 ** (1 / 3)] * 3)


def test_strategies_plan_phases_and_trainable_blocks():
    common = {"freeze_epochs": 1, "epochs": 2, "lr": 1e-2, "unfrozen_lr_div": 10.0, "lr_mult": 100.0, "unfreeze": None}
    assert [(p.name, p.epochs, p.trainable_blocks) for p in plan_phases("head", **common)] == [("frozen", 3, 0)]
    assert [(p.name, p.epochs) for p in plan_phases("finetune", **common)] == [("frozen", 1), ("unfrozen", 2)]
    assert [(p.name, p.epochs, p.head_lr, p.lr_mult) for p in plan_phases("full", **common)] == [("full", 3, 1e-2, 1.0)]
    gradual = plan_phases("gradual", **{**common, "unfreeze": 2})[1]
    # the default recipe's linear probe is the first head-only epoch; where no head-only epoch exists it only starts
    # the head (training.py), so the plan keeps every epoch either way
    probing = {**common, "recipe": DEFAULT}
    # (head-only epochs after it start at the probe's optimum: their head at lr / the recipe's probed_head_lr_div)
    assert [(p.name, p.epochs, p.trainable_blocks, p.probe, p.head_lr) for p in plan_phases("head", **probing)] == [
        ("probe", 1, 0, True, 1e-2), ("frozen", 2, 0, False, pytest.approx(1e-2 / DEFAULT.probed_head_lr_div))]
    assert DEFAULT.probed_head_lr_div == 10.0
    assert [(p.name, p.epochs, p.probe) for p in plan_phases("finetune", **probing)] == [
        ("probe", 1, True), ("unfrozen", 2, False)]
    assert [(p.name, p.epochs) for p in plan_phases("gradual", **{**probing, "freeze_epochs": 3})] == [
        ("probe", 1), ("frozen", 2), ("gradual", 2)]
    assert [p.name for p in plan_phases("finetune", **{**probing, "freeze_epochs": 0})] == ["unfrozen"]
    assert [p.name for p in plan_phases("full", **probing)] == ["full"]
    # ... and a last phase that trains the body ends with the head refitted on eval features (recipe head_refit); on
    # a body that never trained (head) the refit would only repeat the probe
    for strategy in ("finetune", "gradual", "full"):
        assert [p.refit for p in plan_phases(strategy, **probing)] == [False] * (strategy != "full") + [True]
        assert not any(p.refit for p in plan_phases(strategy, **common))  # classic: no refit
    assert not any(p.refit for p in plan_phases("head", **probing))

    model = tvm.get_model("mobilenet_v2", weights=None)
    replace_head(model, 2)
    groups = set_trainable(model, gradual)
    trainable = {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"features.17", "features.18", "classifier.1"}
    assert [g["name"] for g in groups] == ["body2", "head"]
    assert groups[-1]["lr"] == pytest.approx(1e-3) and groups[0]["lr"] == pytest.approx(1e-5)
    train_mode(model)
    bns = {n: m.training for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert not bns["features.0.1"] and bns["features.18.1"]  # frozen BN keeps ImageNet statistics

    with pytest.raises(UsageError, match="--unfreeze"):
        TrainConfig(strategy="finetune", unfreeze=2)


# --- devices --------------------------------------------------------------------------------------

def test_cuda_decisions_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the only thing that cannot exist here
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = resolve_device("auto")
    assert cuda.type == "cuda" and choose_precision(cuda).autocast == torch.bfloat16
    assert choose_precision(cuda).channels_last and choose_precision(cuda, "off").autocast is None
    assert default_workers(cuda, cpus=2) == 1 and default_workers(cuda, cpus=16) == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = resolve_device("auto")
    assert cpu.type == "cpu"
    assert default_workers(cpu, cpus=2) == 0 and default_workers(cpu, cpus=16) == 4
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")


# Flags as /proc/cpuinfo lists them: this workplace's AVX2-only EPYC, and an AVX-512 BF16 one (Zen 4) and a
# Sapphire Rapids with AMX, which cannot exist here.
AVX2 = frozenset("sse4_2 avx avx2 fma f16c bmi2".split())
AVX512_BF16 = AVX2 | frozenset("avx512f avx512bw avx512_vnni avx512_bf16".split())
AMX = AVX2 | frozenset("avx512f avx512_vnni amx_bf16 amx_tile amx_int8".split())


@pytest.mark.parametrize(("flags", "amp", "autocast"), [
    (AVX2, "auto", None),  # emulated bfloat16 is slower than float32 there
    (AVX512_BF16, "auto", torch.bfloat16),
    (AMX, "auto", torch.bfloat16),
    (AVX512_BF16, "off", None),
    (AVX2, "on", torch.bfloat16),  # asked for: said to be emulated
])
def test_cpu_autocast_is_decided_by_the_cpu_flags(flags, amp, autocast):
    precision = choose_precision(torch.device("cpu"), amp, flags)
    assert precision.autocast == autocast and precision.channels_last and not precision.grad_scaler
    assert ("emulated, slower than float32" in precision.why) == (amp == "on" and flags == AVX2)
    assert precision.amp == (None if autocast is None else "bfloat16")


def test_this_cpus_flags_are_read():
    flags = cpu_flags()
    if platform.machine() == "x86_64":
        assert "sse2" in flags  # in every x86-64 CPU
    assert choose_precision(torch.device("cpu")) == choose_precision(torch.device("cpu"), "auto", flags)
    with pytest.raises(UsageError, match="--amp"):
        choose_precision(torch.device("cpu"), "fp8")


# --- LR finder ------------------------------------------------------------------------------------

def test_lr_suggestions_on_a_textbook_curve():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    # flat, then falling fastest around 1e-3, then exploding after 1e-1
    losses = [1.0 - 0.8 / (1 + math.exp(-(math.log10(lr) + 3) * 3)) + (5 * lr if lr > 0.1 else 0) for lr in lrs]
    assert 1e-4 < suggest_steep(lrs, losses) < 1e-2
    # part-way down the longest falling stretch (fastai's rule), never in the exploding tail
    assert 1e-5 < suggest_valley(lrs, losses) < 1e-1


def test_lr_find_restores_weights_and_suggests_within_the_sweep(tiny_data, tmp_path):
    from edgeport.trainer.training import _prepare

    config = TrainConfig(**TINY)
    _, _, model, _, loader, _, _ = _prepare(tiny_data, tmp_path, config, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, loader, torch.device("cpu"), num_it=12, end_lr=1.0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(result.lrs) == len(result.losses) <= 12 and result.lrs == sorted(result.lrs)
    assert result.lrs[0] <= result.valley <= result.lrs[-1] and result.lrs[0] <= result.steep <= result.lrs[-1]


@pytest.mark.parametrize("recipe", ["default", "classic"])  # the probe's sweep on features; batches of images
def test_cli_lr_find_writes_plot_and_prints_suggestions(tiny_data, tmp_path, recipe):
    out = tmp_path / "find"
    result = CliRunner().invoke(train_main, [str(tiny_data), "--lr-find", "--lr-find-iters", "10", "--batch-size", "8",
                                             "--device", "cpu", "--out", str(out), "--recipe", recipe])
    assert result.exit_code == 0, result.output
    assert "suggested LR: valley" in result.output and "steep" in result.output
    assert ("linear probe: head fitted" in result.output) == (recipe == "default")
    assert Image.open(out / "lr_find.png").size[0] > 300
    assert not (out / "best.pt").exists()  # the finder trains nothing


# --- determinism and --lr auto --------------------------------------------------------------------

@pytest.mark.slow
def test_same_seed_same_run_on_cpu_with_lr_auto(tiny_data, tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 1}, lr="auto", lr_find_iters=8)
    runs = [fit(tiny_data, tmp_path / f"run{i}", config, progress=False) for i in range(2)]
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in runs]
    assert strip[0] == strip[1] and [row["phase"] for row in strip[0]] == ["probe", "unfrozen"]
    assert runs[0].lr_find["valley"] == runs[1].lr_find["valley"]
    metrics = json.loads(runs[0].metrics_path.read_text())
    assert metrics["config"]["lr"] == runs[0].lr_find["valley"]  # trained with the suggestion
    # the default recipe's suggestion is the probe's sweep of its own head on the features: one finder, not two
    assert metrics["lr_find"] == metrics["linear_probe"]["lr_find"] and len(metrics["lr_find"]["lrs"]) > 50
    assert (tmp_path / "run0" / "lr_find.png").is_file()
    a, b = (load_checkpoint(r.best_path)["state_dict"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- metrics and pictures -------------------------------------------------------------------------

def test_run_writes_metrics_and_pictures(finetuned_run):
    out = finetuned_run.metrics_path.parent
    metrics = json.loads(finetuned_run.metrics_path.read_text())
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(metrics["history"][-1]["val_accuracy"])
    for name in ("curves.png", "confusion_matrix.png", "top_losses.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 153 and np.trace(matrix) / 153 == pytest.approx(metrics["best"]["val_accuracy"])
    ants = metrics["per_class"]["ants"]
    assert ants["recall"] == pytest.approx(matrix[0, 0] / matrix[0].sum())
    assert ants["precision"] == pytest.approx(matrix[0, 0] / matrix[:, 0].sum())
    top = metrics["top_losses"]
    assert len(top) == 9 and [t["loss"] for t in top] == sorted((t["loss"] for t in top), reverse=True)
    wrong = int(matrix.sum() - np.trace(matrix))
    # two classes: a loss above ln 2 means the actual class got < 50%, i.e. the image was misclassified
    assert [t["predicted"] != t["actual"] for t in top] == [t["loss"] > math.log(2) for t in top]
    assert sum(t["predicted"] != t["actual"] for t in top) == min(9, wrong)
    last = torch.load(out / "last.pt", weights_only=True)  # optimizer/scheduler/RNG as plain data
    assert last["epoch"] == 2 and "state" in last["optimizer"] and last["scheduler"]["total_steps"] > 0


# --- checkpoints and resume -----------------------------------------------------------------------

@pytest.mark.slow
def test_killed_training_subprocess_resumes_and_finishes(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeport.trainer.cli", str(tiny_data), "--freeze-epochs", "1", "--epochs", "2",
           "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        while not (out / "last.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    killed_at = torch.load(out / "last.pt", weights_only=True)
    assert killed_at["epoch"] < 3, "the run finished before it could be killed"

    result = CliRunner().invoke(train_main, [str(tiny_data), "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} after epoch {killed_at['epoch']}" in result.output
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [(h["epoch"], h["phase"]) for h in history] == [(1, "probe"), (2, "unfrozen"), (3, "unfrozen")]
    assert history[0] == killed_at["history"][0]  # the epochs before the kill are kept, not re-run
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    assert load_checkpoint(out / "best.pt")["arch"] == "mobilenet_v2"
