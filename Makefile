# The README's two commands: `make demo` (the main job: `pydl bench --quick`,
# the benchmark report) and `make test`.
# Each sets up what it needs by itself: a virtual environment in .venv with
# pydl built and installed (editable) into it, rebuilt when a kernel changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.pydl-installed
NATIVE := pyproject.toml setup.py $(wildcard kernels/cpp/*.cpp kernels/common/*.hpp kernels/cython/*.pyx)
NVCC   ?= nvcc

.PHONY: demo test install cuda-check wheel-check clean

$(STAMP): $(NATIVE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test,torch,bench]'
	touch $@

install: $(STAMP)

# Peaks, every op on every backend beside NumPy and PyTorch, checked; the
# report lands in ./bench-report/ (report.html, report.md, results.json).
demo: $(STAMP)
	$(BIN)/pydl info
	$(BIN)/pydl bench --quick --out bench-report
	@echo "open bench-report/report.html (or read bench-report/report.md)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Every CUDA source must compile with plain nvcc for Hopper (no GPU needed).
cuda-check:
	@set -e; for f in kernels/cuda/*.cu; do \
	  echo "nvcc -arch=sm_90 $$f"; \
	  $(NVCC) -arch=sm_90 -std=c++17 -Ikernels/common -c $$f -o /dev/null; \
	done

# A real wheel carries the native modules and the CUDA sources, and the
# installed package finds them.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel -q --no-deps -w build/wheel-check .
	$(BIN)/python -m pip install -q --no-deps --target build/wheel-check/site build/wheel-check/pydl-*.whl
	cd build/wheel-check && PYTHONPATH=site ../../$(BIN)/python -c "import pydl, pydl._cpp, pydl._cython; \
	  from pydl.backends.cuda._loader import kernel_dir; d = kernel_dir(); \
	  assert 'site' in str(d) and (d / 'elementwise.cu').is_file(), d; \
	  assert (kernel_dir('common') / 'cuda_helpers.cuh').is_file(); print('wheel ok:', d)"

clean:
	rm -rf $(VENV) build dist *.egg-info pydl/*.so kernels/cython/*.c
