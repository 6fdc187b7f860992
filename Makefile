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

.PHONY: install browser demo test test-all test-asan mutants bench clean

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

# The core built with AddressSanitizer + UndefinedBehaviorSanitizer (its own venv and build
# folder; .venv is untouched), then the parity, streaming, property, registry and
# binding-fuzz tests under it. Python and torch are not instrumented: the ASan runtime is
# preloaded (with libstdc++, so that its exception interceptor finds __cxa_throw), leaks
# are not reported (the interpreter's own), UB aborts.
ASAN_VENV := .venv-asan
ASAN_TESTS ?= tests/test_parity_torch.py tests/test_streaming.py tests/test_properties.py tests/test_networks.py \
	tests/test_binding_fuzz.py tests/test_native_boundary.py tests/test_peephole.py tests/test_projection.py \
	tests/test_layer_norm.py tests/test_stack_plan.py tests/test_cell_fast_path.py tests/test_stream_tensors.py \
	tests/test_plan_cache.py tests/test_quantize.py tests/test_gemm.py tests/test_variants.py tests/test_team_shrink.py
test-asan:
	test -x $(ASAN_VENV)/bin/python || $(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/pip install -q torch==2.13.0
	$(ASAN_VENV)/bin/pip install -q numpy nanobind scikit-build-core ninja pytest hypothesis onnx onnxruntime
	$(ASAN_VENV)/bin/pip install -q --no-build-isolation --force-reinstall --no-deps \
		-C cmake.define.RNNKIT_SANITIZE=ON -C build-dir=build/asan .
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
		ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(ASAN_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ASAN_TESTS) \
		--deselect tests/test_peephole.py::test_command_line_trains_saves_and_reloads_a_peephole_lstm \
		--deselect tests/test_variants.py::test_cli_trains_with_the_variants_and_restores_them \
		--deselect tests/test_projection.py::test_command_line_trains_saves_and_reloads_a_projected_lstm \
		--deselect tests/test_layer_norm.py::test_command_line_trains_saves_and_reloads_a_layer_normalised_lstm

# Plant each bug of tools/mutants.py in a copy of the package; fails if the tests let one survive.
mutants: install
	$(PY) tools/mutants.py

bench: install
	$(PY) benchmarks/bench.py

clean:
	rm -rf build $(VENV) runs
