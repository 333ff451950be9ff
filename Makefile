# Two commands on a fresh machine: `make demo` (install, then train -> export -> infer on the
# offline Digits data) and `make test` (install the dev extras, run the test suite); `make lint` runs ruff.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := runs/demo

.PHONY: demo test lint install clean

$(BIN)/bnn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(BIN)/bnn

demo: $(BIN)/bnn
	rm -rf $(DEMO)
	$(BIN)/bnn train --model lenet5 --dataset digits --act heaviside/ste --weights binary --width 2 --epochs 40 \
		--batch-size 64 --out $(DEMO)
	$(BIN)/bnn export $(DEMO) -o $(DEMO)/model.bnn --onnx $(DEMO)/model.onnx
	$(BIN)/bnn infer $(DEMO)/model.bnn --dataset digits

test: $(BIN)/bnn
	$(BIN)/python -m pytest

lint: $(BIN)/bnn
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
