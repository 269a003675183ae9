# One command each: `make demo` (set up, fetch MNIST, train the paper's MLP with
# the paper's rule, print the test accuracy, write the plot) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_EPOCHS ?= 3
DEMO_OUT ?= runs/demo

.PHONY: setup test demo bench docs clean

setup: $(VENV)/.installed

# torch is pinned here, not in the package (which asks for torch>=2.1 only), to
# the CPU build that pip finds on this project's machines; an unpinned torch
# would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/ibhebb data fetch mnist
	$(BIN)/ibhebb train fig5-mnist epochs=$(DEMO_EPOCHS) --out $(DEMO_OUT) --overwrite --plot

bench: setup
	$(BIN)/ibhebb bench

# The site, into site/ (git-ignored). MathJax is served from the site itself (no network when reading it):
# the npm package mathjax@3.2.2, unpacked once into docs/assets/mathjax/ (git-ignored). The tutorials are
# executed during this build (IBHEBB_DOCS_EXECUTE=true), so their pages show outputs and plots; the strict
# build in `make test` renders them without executing (the tests execute them separately).
MATHJAX_VERSION := 3.2.2
MATHJAX := docs/assets/mathjax/tex-svg.js

$(MATHJAX):
	@mkdir -p docs/assets/mathjax
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
	  && tar -xzf mathjax-$(MATHJAX_VERSION).tgz package/es5/tex-svg.js package/LICENSE \
	  && cd - >/dev/null && cp $$tmp/package/es5/tex-svg.js $(MATHJAX) && cp $$tmp/package/LICENSE docs/assets/mathjax/LICENSE \
	  && rm -rf $$tmp && echo "MathJax $(MATHJAX_VERSION) -> $(MATHJAX)"

docs: setup $(MATHJAX)
	NO_MKDOCS_2_WARNING=1 IBHEBB_DOCS_EXECUTE=true $(BIN)/mkdocs build --strict --clean -d site
	@echo "site built: open file://$(CURDIR)/site/index.html (or run $(BIN)/mkdocs serve)"

clean:
	rm -rf $(VENV) runs .pytest_cache site .cache/mkdocs-jupyter
