"""``edge-train … --nproc-per-node N``: a thin launcher over PyTorch's own ``torch.distributed.run`` (torchrun).

It only turns the command line into torchrun's arguments (``--standalone``: one machine, a free port,
c10d rendezvous) and runs ``-m edgeport.trainer`` with the remaining options in each process. Launch,
rendezvous, worker monitoring and the tear-down of the other ranks when one fails are torchrun's.
"""

from __future__ import annotations

from edgeport.runtime.errors import ExitCode, UsageError, WorkerFailedError

__all__ = ["strip_option", "launch"]

NPROC_OPTION = "--nproc-per-node"
#: Exit codes of edgeport's own errors (usage, verification, gates): passed on as they are.
_EDGEPORT_ERROR_CODES = {ExitCode.USAGE, ExitCode.VERIFICATION, ExitCode.ACCURACY_GATE, ExitCode.SPEED_GATE}


def strip_option(argv: list[str], option: str = NPROC_OPTION) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (the workers must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _describe(failures: dict) -> str:
    parts = []
    for rank, failure in sorted(failures.items()):
        how = f"killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
        parts.append(f"rank {rank} (pid {failure.pid}) {how}")
    return "; ".join(parts)


def launch(argv: list[str], nproc_per_node: int) -> None:
    """Run ``python -m edgeport.trainer *argv`` in ``nproc_per_node`` processes through torchrun."""
    import os

    if "WORLD_SIZE" in os.environ:
        raise UsageError(f"{NPROC_OPTION} was given inside a torchrun job; pass the process count to torchrun only")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"{NPROC_OPTION}={nproc_per_node}", "--max-restarts=0",
                                         "-m", "edgeport.trainer", *strip_option(argv)])
    try:
        run(args)
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        if first.exitcode in _EDGEPORT_ERROR_CODES:
            # the first rank to stop did on an edgeport error (bad data, bad options) and printed it: its exit code
            raise SystemExit(first.exitcode) from exc
        raise WorkerFailedError(f"training process failed: {_describe(exc.failures)}; torchrun stopped the other "
                                "processes. The failing rank's own error is printed above; fix it, then continue "
                                "with --resume OUT") from exc
