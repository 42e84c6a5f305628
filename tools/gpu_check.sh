#!/usr/bin/env bash
# GPU check of the trainer, ≤ 5 minutes on one CUDA machine (CI has no GPU: there the CUDA path's decisions are
# unit-tested with a mocked torch.cuda, and this runs them for real): a 1-GPU run, then a DDP run with one process
# per visible GPU (torchrun, nccl), both with AMP (bf16 where supported, else fp16 + GradScaler)
# and channels_last, then a 1-GPU run through the GPU half of --aug strong with --tta and --balance weights;
# prints img/s per epoch and the best accuracy of each from their metrics.json.
#
#   tools/gpu_check.sh [DATA_DIR] [OUT_DIR]        (DATA_DIR default: $EDGEPORT_HYMENOPTERA)
#
# Each run is cut off after 120 s (timeout); the script fails if any run fails.
set -euo pipefail
DATA=${1:-${EDGEPORT_HYMENOPTERA:?give DATA_DIR or set EDGEPORT_HYMENOPTERA to the hymenoptera folder}}
OUT=${2:-build/gpu_check}
PY=${PYTHON:-.venv/bin/python}
NGPU=$("$PY" -c "import torch, sys; torch.cuda.is_available() or sys.exit('no CUDA GPU visible'); print(torch.cuda.device_count())")
BATCH=$(( (64 + NGPU - 1) / NGPU * NGPU ))  # the global batch: 64, rounded up to a multiple of the GPU count
COMMON=(--freeze-epochs 1 --epochs 2 --batch-size "$BATCH" --device cuda --seed 0)
rm -rf "$OUT"
echo "== 1 GPU"
timeout 120 "$PY" -m edgeport.trainer "$DATA" "${COMMON[@]}" --out "$OUT/gpu1"
echo "== DDP: $NGPU process(es), one per GPU (torchrun, nccl)"
timeout 120 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m edgeport.trainer "$DATA" \
    "${COMMON[@]}" --out "$OUT/ddp"
echo "== 1 GPU, --aug strong --tta --balance weights"
timeout 120 "$PY" -m edgeport.trainer "$DATA" "${COMMON[@]}" --aug strong --tta --balance weights --out "$OUT/strong"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path

import torch

print(f"GPU: {torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}, torch {torch.__version__}")
print("| run | processes | backend | AMP | channels_last | global batch | img/s per epoch (train) | best accuracy | TTA |")
print("|---|---:|---|---|---|---:|---|---:|---:|")
for run in ("gpu1", "ddp", "strong"):
    m = json.loads((Path(sys.argv[1]) / run / "metrics.json").read_text())
    assert m["amp"] in ("bfloat16", "float16"), f"{run}: AMP is off ({m['amp']})"
    rates = ", ".join(f"{t['images_per_second']:.0f}" for t in m["throughput"])
    tta = f"{m['best']['val_accuracy_tta']:.4f}" if "val_accuracy_tta" in m["best"] else "–"
    print(f"| {run} | {m['world_size']} | {m['backend'] or 'none'} | {m['amp']} | {m['channels_last']} | "
          f"{m['global_batch']} | {rates} | {m['best']['val_accuracy']:.4f} | {tta} |")
PYEOF
