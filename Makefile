# Two commands matter: `make demo` (whole stack on its defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKPOINT ?= checkpoints/default.pt
VERSION ?= 1.0
MAR := model_store/deblur_v$(VERSION).mar
ARCHIVE_SOURCES := $(wildcard deblur/*.py deblur/*/*.py handler/*.py model_archive/*.py)

.PHONY: demo test serve stop status lint setup setup-dev clean chromium

## Runtime environment: created once, reinstalled only when the requirements change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

## Test tools on top of the runtime.
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

## The shipped checkpoint packed as version $(VERSION); rebuilt when the checkpoint or the code inside changes.
$(MAR): $(CHECKPOINT) $(ARCHIVE_SOURCES) | $(VENV)/.installed
	$(PY) -m model_archive --checkpoint $(CHECKPOINT) --version $(VERSION) --kernel-aware --force

serve: $(MAR)
	$(PY) -m serve start

stop: | $(VENV)/.installed
	$(PY) -m serve stop

status: | $(VENV)/.installed
	$(PY) -m serve status

## TorchServe in the background, the Gradio page in the foreground; Ctrl-C stops both.
demo: serve
	@trap '$(PY) -m serve stop' EXIT; $(PY) -m demo

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Debian's chromium for the real-browser demo test (Playwright never downloads a browser). Installed
## only when missing and we are root; if it cannot be installed the browser test skips and says why.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"; fi

test: $(VENV)/.installed-dev $(MAR) lint chromium
	$(PY) -m pytest -m "not slow"

## Load, worker-fault and versions-under-load tests against a real TorchServe (a few minutes; CI runs them).
.PHONY: test-slow
test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -m slow

clean:
	rm -rf model_store run .pytest_cache
