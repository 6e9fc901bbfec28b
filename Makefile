# All set-up happens on first use: a virtual environment in .venv with ximgctx and its dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are installed first and pinned, so pip resolves the rest against them.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
OUT ?= runs/quickstart

.PHONY: install quickstart test lint core-smoke clean

# ximgctx[dev] is ximgctx[all] (every extra) plus the test tools: the two commands below install everything.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	$(VENV)/bin/ximgctx quickstart --out $(OUT)

test: $(VENV)/.installed
	bash .ci/services.sh
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The core install alone (`pip install .`, no extras) in a second venv: build, train a step, predict, save/load.
core-smoke:
	TORCH_SPEC="$(TORCH_SPEC)" CORE_VENV=$(VENV)-core bash .ci/core_smoke.sh

clean:
	rm -rf $(VENV) $(VENV)-core runs .pytest_cache .ruff_cache
