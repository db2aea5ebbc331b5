# smmf — the two commands a newcomer needs: `make test` (and, later, `make demo`).
#
# Everything the tests need is installed from here, so a fresh clone on a
# fresh machine passes: a virtualenv with the package and its test extras,
# and the etcd server binary from Debian's etcd-server package.

PYTHON ?= python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
PY     := $(VENV)/bin/python
EXTRAS := test,etcd

.PHONY: test venv etcd bench clean

test: etcd venv
	$(PY) -m pytest -q -p no:cacheprovider

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

# The real etcd binary for the tests (Debian package etcd-server, version 3.4).
etcd:
	@if command -v etcd >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing etcd-server with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; \
	else \
		echo "etcd is not installed: run 'sudo apt-get install etcd-server' (Debian/Ubuntu), then 'make test' again" >&2; \
		exit 1; \
	fi

bench: etcd venv
	$(PY) bench/registry.py

clean:
	rm -rf $(VENV) build *.egg-info
