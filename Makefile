# The README's two commands: `make demo` (the main job: `pydl bench --quick`,
# the benchmark report, and a short `pydl train`) and `make test`.
# Each sets up what it needs by itself: a virtual environment in .venv with
# pydl built and installed (editable) into it, rebuilt when a kernel changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pydl-installed
NATIVE := pyproject.toml setup.py $(wildcard kernels/cpp/*.cpp kernels/common/*.hpp kernels/cython/*.pyx)
NVCC   ?= nvcc

.PHONY: demo test install cuda-check nvrtc-check wheel-check sanitize fuzz threads large soak clean

# The build tools go into the venv and every build uses them there (--no-build-isolation): one
# stable set of include paths, so a compiler cache (CI's ccache) serves the wheel check's build
# from the editable one's objects, and no throwaway build environment is set up per build.
BUILD_DEPS := 'setuptools>=77' wheel 'pybind11>=2.12' 'Cython>=3.0'

$(STAMP): $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(BUILD_DEPS)
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,torch,bench,train]'
	touch $@

install: $(STAMP)

# Peaks, every op on every backend beside NumPy and PyTorch, checked; the
# report lands in ./bench-report/ (report.html, report.md, results.json).
# Then LeNet-5 trained on the 5,000 bundled MNIST digits for a few epochs: the
# test accuracy printed, the curves and checkpoint in ./train-report/.
demo: $(STAMP)
	$(BIN)/pydl info
	$(BIN)/pydl bench --quick --out bench-report
	$(BIN)/pydl train --model lenet5 --data mnist5k --epochs 4 --threads 2 --no-progress --out train-report
	@echo "open bench-report/report.html (or read bench-report/report.md); training curves: train-report/curves.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Every CUDA family through NVRTC, the compiler the loader uses on a GPU, with the loader's options and
# the template instances the adapters declare (NVIDIA's wheel carries libnvrtc; no GPU, no driver).
nvrtc-check: $(STAMP)
	$(BIN)/python -m pip install -q 'nvidia-cuda-nvrtc==13.*'
	$(BIN)/python dev/cuda/nvrtc_check.py --arch 90
	$(BIN)/python dev/cuda/nvrtc_check.py --arch 80

# Every CUDA source must compile with plain nvcc for Hopper (no GPU needed).
cuda-check:
	@set -e; for f in kernels/cuda/*.cu; do \
	  echo "nvcc -arch=sm_90 $$f"; \
	  $(NVCC) -arch=sm_90 -std=c++17 -Ikernels/common -c $$f -o /dev/null; \
	done

# A real wheel carries the native modules of every SIMD level (the portable
# build) and the CUDA sources, and the installed package finds them and
# imports the level this CPU runs.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w build/wheel-check .
	$(BIN)/python -m pip install -q --no-deps --target build/wheel-check/site build/wheel-check/pydl-*.whl
	cd build/wheel-check && PYTHONPATH=site ../../$(BIN)/python -c "import importlib.util as u, pydl, pydl._cpp, pydl._cython; \
	  from pydl import machine; from pydl.backends.cuda._loader import kernel_dir; d = kernel_dir(); \
	  assert 'site' in str(d) and (d / 'elementwise.cu').is_file(), d; \
	  assert (kernel_dir('common') / 'cuda_helpers.cuh').is_file(); \
	  mods = [f'pydl._{f}_{lv}' for f in ('cpp', 'cython') for lv in machine.LEVELS]; \
	  missing = [m for m in mods if not (u.find_spec(m) and 'site' in u.find_spec(m).origin)]; \
	  assert not missing, f'wheel lacks {missing}'; assert machine.build_kind() == 'portable'; \
	  p = machine.path_in_use(); assert 'site' in pydl._cpp.__file__, pydl._cpp.__file__; \
	  print('wheel ok:', d, '|', len(mods), 'native modules | cpp path:', p['cpp']['level'], '(' + p['cpp']['why'] + ')')"

# The native modules built with AddressSanitizer and UndefinedBehaviorSanitizer in a copy of the
# tree (build/sanitize: PYDL_SANITIZE, one native-level module per family), then the native
# families' tests run under them with the sanitizer runtimes preloaded into Python. Any finding
# stops the run with its report. SAN_TESTS picks the tests (.ci/run runs a subset).
SAN_DIR   := build/sanitize
SAN_TESTS ?= tests/test_conformance.py tests/test_gemm.py tests/test_conv.py tests/test_pool.py tests/test_rnn.py tests/test_sparse.py tests/test_cpp_simd_levels.py tests/test_sanitize.py
SAN_PY     = $(abspath $(BIN))/python
sanitize: $(STAMP)
	rm -rf $(SAN_DIR) && mkdir -p $(SAN_DIR)
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t $(SAN_DIR)
	cd $(SAN_DIR) && PYDL_SANITIZE=address,undefined PYDL_ARCH=native $(SAN_PY) setup.py -q build_ext --inplace
	cd $(SAN_DIR) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:detect_odr_violation=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYDL_EXPECT_SANITIZED=1 \
	  $(SAN_PY) -m pytest -q -p no:cacheprovider $(SAN_TESTS)

# Property-based fuzzing (tests/test_fuzz.py, pydl/testing_fuzz.py): FUZZ_EXAMPLES random examples
# spread over every op with a native kernel, each on every native backend and variant against
# the reference, forward and backward (or the same refusal). FUZZ_SEED fixes the draw,
# FUZZ_OPS=relu,conv2d picks ops; the counts land in fuzz-report.json. The suite runs 12 per op.
FUZZ_EXAMPLES ?= 50000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_REPORT=fuzz-report.json $(BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/test_fuzz.py -k test_fuzz --hypothesis-show-statistics

# Every native op from 4 Python threads at once against serial runs, the thread count changed
# while they compute (tests/test_threads.py); THREAD_ROUNDS rounds (the suite runs 20).
THREAD_ROUNDS ?= 1000
threads: $(STAMP)
	THREAD_ROUNDS=$(THREAD_ROUNDS) $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_threads.py

# Tensors past 2^31 elements (tests/test_large.py): an 8.6 GB float32 relu on every native
# backend (needs ~17.2 GB free, else skipped saying so), a conv whose im2col columns would be
# 2.8e9 elements (every backend tiles them) against PyTorch, and a GEMM with K > 2^31.
large: $(STAMP)
	PYDL_LARGE=1 $(BIN)/python -m pytest -q -p no:cacheprovider -rs tests/test_large.py

# Memory soak (tests/soak.py): every native op's forward and backward SOAK_ITERS times on random
# shapes and dtypes, across its native backends; fails if resident memory grows 5% or more after
# the warm-up. tests/test_soak.py runs a short version in the default suite.
SOAK_ITERS ?= 10000
soak: $(STAMP)
	$(BIN)/python tests/soak.py --iters $(SOAK_ITERS)

clean:
	rm -rf $(VENV) build dist *.egg-info pydl/*.so pydl/_build_config.py kernels/cython/*.c
