# Two commands: `make demo` renders the demo timeline, `make test` runs the test suite.
# Both create (or reuse) a virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# Exact versions of every dependency (`make pins` regenerates it from a tested fresh install).
CONSTRAINTS ?= constraints.txt
# The CPU build, at the version the constraints pin; a GPU user installs a CUDA build first
# (see README) and keeps it.
TORCH ?= $(or $(shell grep -m1 '^torch==' $(CONSTRAINTS) 2>/dev/null),torch==2.13.0)
BIN := $(VENV)/bin
STAMP := $(VENV)/.latentwalk-installed

.PHONY: demo test train pins clean

# Installs torch, then latentwalk and its extras, at the versions in $(CONSTRAINTS). torch comes
# from $(TORCH) (or is kept if already installed), so the second step is constrained to the torch
# that is there: pip neither swaps a CUDA build for the CPU one nor changes its version.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	grep -v '^torch==' $(CONSTRAINTS) > $(VENV)/constraints.txt
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet -c $(VENV)/constraints.txt $(TORCH)
	$(BIN)/python -c "from importlib.metadata import version; print('torch==' + version('torch'))" >> $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e ".[test]"
	touch $(STAMP)

configs/demo.wav: latentwalk/toy/soundtrack.py | $(STAMP)
	$(BIN)/python -m latentwalk.toy.soundtrack $@

demo: $(STAMP) configs/demo.wav
	$(BIN)/latentwalk render configs/demo.yaml

# Two pytest workers (pytest-xdist): most tests spend their time in one thread (a subprocess
# importing torch, a 1-thread render), so two cores run them side by side.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

train: $(STAMP)
	$(BIN)/python -m latentwalk.toy.train

# Upgrade the pins: a fresh temporary venv, the newest releases pyproject.toml allows, the test
# suite; constraints.txt is rewritten only if it passes.
pins:
	PYTHON="$(PYTHON)" TORCH="$(TORCH)" PINS_OUT="$(CONSTRAINTS)" bash scripts/update_pins.sh

clean:
	rm -rf $(VENV) renders/*.mp4 renders/*.json
