"""``python -m edgeport.trainer DATA …`` is ``edge-train``; torchrun starts each process this way:
``torchrun --nproc-per-node N -m edgeport.trainer DATA …``."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="edge-train")
