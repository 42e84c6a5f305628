"""Data-parallel training through torchrun: 2 real CPU processes with gloo on hymenoptera photos.

What is not tested here (no GPU, one machine): nccl, AMP under DDP, multi-node rendezvous.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from edgeport.runtime.errors import ExitCode
from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.devices import choose_precision
from edgeport.trainer.distributed import Dist, is_collective_failure, merge_shards, shard_indices
from edgeport.trainer.launch import strip_option

from ..helpers import hymenoptera_subset

TIMEOUT_S = 60  # --dist-timeout of the failure tests: the job must end well within it


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, hymenoptera):
    """24 train + 20 val real photos per class (symlinks): 6 steps of 8 per epoch, 40 val images."""
    return hymenoptera_subset(tmp_path_factory.mktemp("ddp"), hymenoptera, {"train": 24, "val": 20})


#: Head-only, no augmentation: on the same global batches the only difference between 1 and 2 processes
#: is the head's dropout draws (and float summation order).
COMMON = ["--strategy", "head", "--freeze-epochs", "1", "--epochs", "1", "--batch-size", "8", "--aug", "none",
          "--seed", "0", "--device", "cpu", "--workers", "0"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
            "edgeport.trainer", *args]


def _edge_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeport.trainer", *args]


# --- pieces -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, world", [(153, 2), (153, 4), (5, 3), (8, 8)])
def test_val_shards_cover_every_image_exactly_once_and_merge_back_in_order(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # no image twice (DistributedSampler would pad), none missing
    parts = [{"targets": torch.tensor(s), "probs": torch.tensor(s, dtype=torch.float32)[:, None].repeat(1, 2)}
             for s in shards]
    merged = merge_shards(parts)
    assert merged["targets"].tolist() == list(range(n)) and merged["probs"][:, 1].tolist() == list(range(n))


def test_one_process_needs_no_process_group():
    ctx = Dist()
    assert not ctx.active and ctx.is_main
    assert ctx.broadcast({"a": 1}) == {"a": 1} and ctx.all_gather(3) == [3] and ctx.sum(2.0, 5.0) == [2.0, 5.0]


def test_launcher_strips_its_own_option():
    argv = ["data", "--nproc-per-node", "2", "--epochs", "1", "--nproc-per-node=4", "--out", "o"]
    assert strip_option(argv) == ["data", "--epochs", "1", "--out", "o"]


@pytest.mark.parametrize("message, ours", [
    # gloo's TCP transport, as a hung peer's ranks saw it (the second came first under load in CI: a race)
    ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms "
     "for recv operation to complete", True),
    ("Application timeout caused pair closure", True),
    ("Connection closed by peer [127.0.0.1]:41817", True),
    ("Socket unexpectedly closed", True),  # gloo's other transport errors: the words in this torch's library
    ("Pair is not connected (", True),
    ("CUDA out of memory. Tried to allocate 20.00 MiB", False),  # the training code's own: not a peer's fault
    ("mat1 and mat2 shapes cannot be multiplied (8x1280 and 1000x2)", False),
])
def test_backend_errors_are_told_from_the_training_codes_own(message, ours):
    assert is_collective_failure(RuntimeError(message)) is ours


def test_amp_is_bf16_where_supported_else_fp16_with_a_scaler(monkeypatch):
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: only the decision is tested
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_precision(cuda).autocast == torch.bfloat16 and not choose_precision(cuda).grad_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert choose_precision(cuda).autocast == torch.float16 and choose_precision(cuda).grad_scaler
    assert not choose_precision(cpu, "on").grad_scaler


def test_cuda_processes_take_the_gpu_of_their_local_rank(monkeypatch):
    from edgeport.runtime.errors import UsageError
    from edgeport.trainer.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no GPU here: only the decision is tested
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(UsageError, match="one process per GPU"):
        resolve_device("cuda", local_rank=2)


def test_nproc_per_node_inside_torchrun_is_refused(small_data, tmp_path):
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    proc = subprocess.run(_edge_train(str(small_data), "--nproc-per-node", "2", "--out", str(tmp_path / "o")),
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.USAGE and "inside a torchrun job" in proc.stderr


def test_a_data_error_on_rank_0_ends_every_rank_with_its_exit_code(small_data, tmp_path):
    """Rank 0 scans alone; its error ends the job at once (no wait for the timeout) with the error's exit code 2."""
    one_class = tmp_path / "one"
    (one_class / "ants").mkdir(parents=True)
    (one_class / "ants" / "a.jpg").symlink_to(next((small_data / "train" / "ants").iterdir()).resolve())
    start = time.monotonic()
    proc = subprocess.run(_edge_train(str(one_class), "--nproc-per-node", "2", "--device", "cpu", "--out", str(tmp_path / "o")),
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.USAGE, proc.stderr[-2000:]
    assert "a classifier needs at least 2" in proc.stderr and time.monotonic() - start < 100


# --- 2 processes ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_gloo_processes_match_one_process_within_one_photo(small_data, tmp_path):
    """torchrun, 2 processes × 4 images against ``fit`` in 1 process × 8 images: the same global batch of 8,
    seed 0, head-only, no augmentation. Both runs see the same 8 images in every step (DistributedSampler's
    permutation, split ``rank::2``), so their best validation accuracies over the same 40 photos may differ
    by at most one photo (1/40), from dropout draws and summation order."""
    ddp_out = tmp_path / "ddp"
    proc = subprocess.run(_torchrun(str(small_data), *COMMON, "--out", str(ddp_out)), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 8 = 2 × 4 per process" in proc.stdout and "linear scaling rule" in proc.stdout
    assert proc.stdout.count("best val accuracy") == 1  # rank 0 speaks, rank 1 does not

    single = fit(small_data, tmp_path / "one", TrainConfig(strategy="head", freeze_epochs=1, epochs=1, batch_size=8,
                                                           aug="none", seed=0, device="cpu", workers=0), progress=False)
    metrics = json.loads((ddp_out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["backend"], metrics["global_batch"], metrics["per_process_batch"]) == (2, "gloo", 8, 4)
    n_val = 40
    assert sum(map(sum, metrics["confusion_matrix"])) == n_val  # every val image counted once, over both shards
    assert len(metrics["history"]) == 2 and [t["train_images"] for t in metrics["throughput"]] == [48, 48]
    best = load_checkpoint(ddp_out / "best.pt")
    assert sorted(p.name for p in ddp_out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len(best["val_files"]) == n_val
    assert abs(best["metrics"]["val_accuracy"] - single.best["val_accuracy"]) * n_val <= 1 + 1e-9, \
        (best["metrics"]["val_accuracy"], single.best["val_accuracy"])
    assert best["metrics"]["val_accuracy"] > 0.6  # it learnt something: the comparison is not between two coin flips


def _workers(launcher: psutil.Process, n: int, deadline: float) -> list[psutil.Process]:
    """The launcher's ``-m edgeport.trainer`` worker processes, once there are ``n``."""
    while time.monotonic() < deadline:
        found = [p for p in launcher.children(recursive=True) if "edgeport.trainer" in " ".join(p.cmdline())
                 and "--nproc-per-node" not in p.cmdline()]
        if len(found) == n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"the {n} workers did not start")


def _wait_for(path: Path, proc: subprocess.Popen, deadline: float) -> None:
    while not path.exists():
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {path.name} was written"
        assert time.monotonic() < deadline, f"no {path.name} in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_an_error_within_the_timeout(small_data, tmp_path):
    out = tmp_path / "run"
    cmd = _edge_train(str(small_data), *COMMON, "--epochs", "20", "--nproc-per-node", "2",
                      "--dist-timeout", str(TIMEOUT_S), "--out", str(out))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        _wait_for(out / "last.pt", proc, deadline)  # training is under way on both ranks
        rank1 = next(p for p in _workers(psutil.Process(proc.pid), 2, deadline) if p.environ().get("RANK") == "1")
        rank1.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        code = proc.wait(timeout=TIMEOUT_S)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert code == ExitCode.WORKER_FAILED, stderr[-3000:]
    assert took < TIMEOUT_S
    assert f"rank 1 (pid {rank1.pid}) killed by SIGKILL" in stderr
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] < 21  # it did not finish


@pytest.mark.slow
def test_a_hung_rank_times_out_instead_of_hanging(small_data, tmp_path):
    """SIGSTOP, not SIGKILL: torchrun sees nothing wrong, only the process-group timeout can end the job."""
    out, timeout = tmp_path / "run", 10
    cmd = _edge_train(str(small_data), *COMMON, "--epochs", "20", "--nproc-per-node", "2", "--dist-timeout", str(timeout),
                      "--out", str(out))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rank1 = None
    try:
        deadline = time.monotonic() + 300
        _wait_for(out / "last.pt", proc, deadline)
        rank1 = next(p for p in _workers(psutil.Process(proc.pid), 2, deadline) if p.environ().get("RANK") == "1")
        rank1.suspend()
        code = proc.wait(timeout=timeout + 60)  # + torchrun's 30 s grace before it SIGKILLs the stopped rank
    finally:
        if rank1 is not None and rank1.is_running():
            rank1.resume()
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert code == ExitCode.WORKER_FAILED, stderr[-3000:]
    assert f"did not answer within --dist-timeout {timeout} s" in stderr  # rank 0's own, clear error
    assert "rank 0" in stderr and "Internal error" not in stderr


@pytest.mark.slow
def test_resume_after_the_whole_job_is_killed_continues_from_last_pt(small_data, tmp_path):
    out = tmp_path / "run"
    cmd = _edge_train(str(small_data), *COMMON, "--epochs", "2", "--nproc-per-node", "2", "--out", str(out))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        _wait_for(out / "last.pt", proc, deadline)
        job = [psutil.Process(proc.pid), *_workers(psutil.Process(proc.pid), 2, deadline)]
        for p in job:  # the launcher and both workers at once, like a lost node (torchrun's workers
            p.send_signal(signal.SIGKILL)  # have their own process groups: killpg would miss them)
        psutil.wait_procs(job, timeout=60)
    finally:
        proc.wait(timeout=60)
    killed_at = torch.load(out / "last.pt", weights_only=True)
    assert killed_at["epoch"] < 3, "the run finished before it could be killed"

    resumed = subprocess.run(_edge_train(str(small_data), "--resume", str(out), "--nproc-per-node", "2"), env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {out} after epoch {killed_at['epoch']}" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][:killed_at["epoch"]] == killed_at["history"]  # epochs before the kill kept, not re-run
    assert metrics["world_size"] == 2
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
