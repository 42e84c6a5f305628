"""Release and CI checks: ``make arm64-check`` (``tools.arm64_check``), ``python -m tools.runtime_matrix``,
``tools/gpu_check.sh``, ``make system-deps`` (``tools/system-deps.sh``); see tools/README.md."""
