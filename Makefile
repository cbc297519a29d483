# Two commands: `make demo` renders the demo timeline, `make test` runs the test suite.
# Both create (or reuse) a virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
# The CPU build; a GPU user installs a CUDA build first (see README) and keeps it.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.latentwalk-installed

.PHONY: demo test train clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

configs/demo.wav: latentwalk/toy/soundtrack.py | $(STAMP)
	$(BIN)/python -m latentwalk.toy.soundtrack $@

demo: $(STAMP) configs/demo.wav
	$(BIN)/latentwalk render configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

train: $(STAMP)
	$(BIN)/python -m latentwalk.toy.train

clean:
	rm -rf $(VENV) renders/*.mp4 renders/*.json
