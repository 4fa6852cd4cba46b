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
# The book's build is piped through tee: its status must survive the pipe.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# --no-compile: pip would byte-compile all ~11,750 modules it installs, one
# after another (~45 s of one core here); Python compiles the few thousand
# that are imported when they first are.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check \
	--no-compile

.PHONY: install book test test-jax test-tensorflow coverage lint format lab \
	clean lock browser bench bench-authors

$(STAMP): pyproject.toml constraints.txt book/ipython_kernel_config.py \
		book/jupyter_server_config.py book/jupyterlab_overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -c constraints.txt -e ".[test,book]"
	install -D -m 644 book/ipython_kernel_config.py \
		$(VENV)/etc/ipython/ipython_kernel_config.py
	# `make lab`: a chapter opens without an "unsaved" mark (see the file).
	install -D -m 644 book/jupyter_server_config.py \
		$(VENV)/etc/jupyter/jupyter_server_config.py
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
BOOK_ENV := KERAS_BACKEND=$(BOOK_BACKEND) NORMBOOK_STATIC=1
book: $(STAMP) $(VENDOR)
	# The chapters run two at a time into the build's jupyter-cache (the
	# build alone runs them one after another); the chapter that quotes the
	# others' claims runs last. The cache is also keyed on keraslayers,
	# normbook and the backend, so changing them re-runs every chapter.
	$(BOOK_ENV) $(BIN)/python tools/execute_chapters.py
	$(BOOK_ENV) $(BIN)/jupyter-book build --warningiserror --nitpick \
		--keep-going . 2>&1 | tee _build/book-build.log
	# Executing here would mean myst-nb read a chapter's cells otherwise
	# than tools/execute_chapters.py: correct, but one at a time again.
	! grep "Executing notebook" _build/book-build.log
	$(BIN)/python tools/book_timings.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/canonical_chapters.py --check
	$(BIN)/python tools/claims_lint.py
	$(BIN)/python tools/page_metrics.py --check

# Debian's Chromium for the browser tests (Playwright never downloads one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium >/dev/null; }
	command -v chromium

## Everything CI checks: lint, the book build, the suite on both backends.
## The two backends' suites run side by side, each on two pytest-xdist
## workers (a test file stays on one worker, so a module's fixture is built
## once): one process leaves the second core idle most of the time
## (compiling a small step is single-threaded, and many tests wait on a
## subprocess). Each suite's output is printed whole when it ends.
test: lint book browser
	$(MAKE) --no-print-directory -j2 --output-sync=target \
		test-jax test-tensorflow

PYTEST := $(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist loadfile \
	--durations=20
test-jax: $(STAMP)
	mkdir -p _build/pytest
	COVERAGE_FILE=_build/.coverage.jax KERAS_BACKEND=jax \
		$(PYTEST) tests --ignore=tests/site \
		--basetemp=_build/pytest/jax $(PYTEST_ARGS)

test-tensorflow: $(STAMP)
	mkdir -p _build/pytest
	COVERAGE_FILE=_build/.coverage.tensorflow KERAS_BACKEND=tensorflow \
		$(PYTEST) tests \
		--basetemp=_build/pytest/tensorflow $(PYTEST_ARGS)

## Line coverage of keraslayers/ and book/normbook/ by both suites (the
## site tests need `make book` first); not part of `make test`.
coverage: $(STAMP)
	rm -f _build/.coverage*
	$(MAKE) --no-print-directory -j2 --output-sync=target \
		test-jax test-tensorflow PYTEST_ARGS="--cov=keraslayers \
		--cov=book/normbook --cov-report="
	$(BIN)/coverage combine --data-file=_build/.coverage \
		_build/.coverage.jax _build/.coverage.tensorflow
	$(BIN)/coverage report --data-file=_build/.coverage

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
## JupyterLab on the chapters, with the backend the book is built with
## (`make lab BOOK_BACKEND=tensorflow` for the other). A chapter run here
## records no claims: the build's records stay the book's (normbook.claims).
lab: $(STAMP)
	@echo "make lab: the chapters' kernels run Keras on $(BOOK_BACKEND)" \
		"(BOOK_BACKEND=tensorflow for TensorFlow)"
	env -u NORMBOOK_CLAIMS_DIR -u NORMBOOK_STATIC \
		KERAS_BACKEND=$(BOOK_BACKEND) \
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
