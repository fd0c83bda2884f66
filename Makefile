# Two entry points on a fresh machine: `make demo` and `make test` (each creates .venv first).
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch to install first. The default resolves to a CPU build on CPU machines; CUDA users set
# e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" (see README).
TORCH_SPEC ?= torch==2.13.0
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: install demo test bench lint clean gpu-wheels gpu-check gpu-check-dry

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m morphface demo -o out/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/render.py --quick

# The GPU check (issue 22, bench/gpu_check.py). gpu-wheels: on a machine with PyPI, fetch the wheels the GPU
# machine lacks into bench/gpu_wheels/ (carry that folder). gpu-check: on the GPU machine, offline (no venv there:
# its python3 holds torch). gpu-check-dry: the CPU dry run. Extra options: GPU_CHECK_ARGS="--report PATH ...".
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)

gpu-wheels:
	$(GPU_PY) bench/gpu_wheels/fetch.py

gpu-check:
	$(GPU_PY) bench/gpu_check.py --device cuda --install-wheels bench/gpu_wheels $(GPU_CHECK_ARGS)

gpu-check-dry: $(VENV)/.installed
	$(PY) bench/gpu_check.py --device cpu --quick $(GPU_CHECK_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check morphface tests bench

clean:
	rm -rf $(VENV) out .numba_cache .pytest_cache
