# Set-up and entry points. Each target creates .venv and installs what it
# needs from pyproject.toml, pinned by constraints.txt, so a fresh machine
# with Python 3.11 needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TensorFlow's C++ start-up logs go to stderr, which the strict book build
# treats as a warning in any cell that imports it.
export TF_CPP_MIN_LOG_LEVEL := 2
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: install book test lint format lab clean lock browser bench \
	bench-authors

$(STAMP): pyproject.toml constraints.txt book/ipython_kernel_config.py \
		book/jupyterlab_overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -c constraints.txt -e ".[test,book]"
	install -D -m 644 book/ipython_kernel_config.py \
		$(VENV)/etc/ipython/ipython_kernel_config.py
	# JupyterLab opens the chapters' .md files as notebooks (jupytext).
	install -D -m 644 book/jupyterlab_overrides.json \
		$(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

install: $(STAMP)

VENDOR := _vendor/.copied

$(VENDOR): $(STAMP) tools/vendor_assets.py
	$(BIN)/python tools/vendor_assets.py _vendor
	touch $(VENDOR)

## The main job: execute the chapters and build the static site (_build/html).
## The chapters run on either backend; the build uses JAX, whose jit runs
## the chapters' small training steps about 3x faster than TensorFlow on a
## CPU, which is what lets every comparison afford several seeds.
BOOK_BACKEND ?= jax
book: $(STAMP) $(VENDOR)
	# The choosing chapter reads the records of claims the earlier chapters
	# checked (_build/claims); chapters cached without their records re-run.
	test -d _build/claims || rm -rf _build/.jupyter_cache
	KERAS_BACKEND=$(BOOK_BACKEND) NORMBOOK_STATIC=1 $(BIN)/jupyter-book build --warningiserror --nitpick \
		--keep-going .
	$(BIN)/python tools/book_timings.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/canonical_chapters.py --check

# Debian's Chromium for the browser tests (Playwright never downloads one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium >/dev/null; }
	command -v chromium

## Everything CI checks: lint, the book build, the suite on both backends.
test: lint book browser
	KERAS_BACKEND=jax $(BIN)/python -m pytest tests --ignore=tests/site
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest tests

## Side-by-side cost of every layer, on TF+XLA, TF without XLA and JAX;
## measures the rates the slow layers' operations reach (probes.json);
## writes benchmarks/results/{results.json,results.md} (several minutes),
## then the two-device cost of synchronized statistics (distributed.{json,md}).
BENCH := $(BIN)/python -m benchmarks.bench
RESULTS := benchmarks/results
bench: $(STAMP)
	KERAS_BACKEND=tensorflow $(BENCH) --xla on --out $(RESULTS)/tensorflow_xla.json
	KERAS_BACKEND=tensorflow $(BENCH) --xla off --out $(RESULTS)/tensorflow_noxla.json
	KERAS_BACKEND=jax $(BENCH) --out $(RESULTS)/jax.json
	KERAS_BACKEND=tensorflow $(BIN)/python -m benchmarks.probes --out $(RESULTS)/probes.json
	KERAS_BACKEND=jax $(BIN)/python -m benchmarks.probes --out $(RESULTS)/probes.json
	$(BIN)/python -m benchmarks.report $(RESULTS)
	$(BIN)/python -m benchmarks.distributed --out $(RESULTS)/distributed.json

## Our IterNorm beside the authors' PyTorch IterNorm (benchmarks/authors.py
## says where their file comes from): make bench-authors THEIRS=path.
bench-authors: $(STAMP)
	$(PIP_INSTALL) -c constraints.txt -e ".[authors]"
	KERAS_BACKEND=jax $(BIN)/python -m benchmarks.authors \
		--theirs $(THEIRS) --out $(RESULTS)/authors.json
	KERAS_BACKEND=tensorflow $(BIN)/python -m benchmarks.authors \
		--theirs $(THEIRS) --out $(RESULTS)/authors.json
	$(BIN)/python -m benchmarks.report $(RESULTS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/python tools/canonical_chapters.py

## Open the chapters as notebooks (jupytext) with live widgets.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=book $(if $(SUDO),,--allow-root)

clean:
	rm -rf _build _vendor

## Re-resolve the dependencies from pyproject.toml into constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e ".[test,book]"
	{ echo "# Pinned versions of every dependency, resolved on Linux x86_64 / CPython 3.11."; \
	  echo "# Regenerate after changing pyproject.toml: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -iE "^(pip|setuptools|keraslayers)=="; \
	} > constraints.txt
	rm -rf .lock-venv
