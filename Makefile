# One command each: `make demo` (set up, fetch MNIST, train the paper's MLP with
# the paper's rule, print the test accuracy, write the plot) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_EPOCHS ?= 3
DEMO_OUT ?= runs/demo

.PHONY: setup test demo bench clean

setup: $(VENV)/.installed

# torch is pinned here, not in the package (which asks for torch>=2.1 only), to
# the CPU build that pip finds on this project's machines; an unpinned torch
# would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/ibhebb data fetch mnist
	$(BIN)/ibhebb train fig5-mnist epochs=$(DEMO_EPOCHS) --out $(DEMO_OUT) --overwrite --plot

bench: setup
	$(BIN)/ibhebb bench

clean:
	rm -rf $(VENV) runs .pytest_cache
