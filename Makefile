# All set-up happens on first use: a virtual environment in .venv with ximgctx and its dependencies.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are installed first and pinned, so pip resolves the rest against them.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
OUT ?= runs/quickstart

.PHONY: install quickstart test lint clean

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

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
