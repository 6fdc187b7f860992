# The two commands of the README:
#   make demo   create .venv, install, train and sample a character LSTM on built-in data
#   make test   create .venv, install, run the test suite (skips listed; with CI set, a skip fails)
# Both are idempotent: the venv is (re)built only when the build inputs change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.rnnkit-installed
PYTEST_ARGS ?= -q -rs -m "not slow"

.PHONY: install browser demo test test-all mutants bench clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*) $(wildcard csrc/*/*)
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: any other version pulls GBs of CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q numpy nanobind scikit-build-core ninja
	$(PIP) install -q --no-build-isolation -e '.[test,cli,bench,tasks,interop]'
	touch $@

install: $(STAMP)

demo: install
	$(PY) -m rnnkit train lm --preset demo
	@echo "--- rnnkit sample runs/demo --prime 'import ' --length 300 --temperature 0.7"
	@$(PY) -m rnnkit sample runs/demo --prime "import " --length 300 --temperature 0.7

# Headless Chromium for the visualize page test (Debian's package; the test skips without it).
browser:
	@sh tests/setup_chromium.sh || echo "make: no Chromium: the browser test will skip"

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: install browser
	$(PY) -m pytest -q -rs

# Plant each bug of tools/mutants.py in a copy of the package; fails if the tests let one survive.
mutants: install
	$(PY) tools/mutants.py

bench: install
	$(PY) benchmarks/bench.py

clean:
	rm -rf build $(VENV) runs
