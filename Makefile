# The README's two commands: `make test` and `make figures`. Both build the environment first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.swaa-setup-stamp
PYTEST_ARGS ?=

.PHONY: setup test test-unit test-integration test-gpu figures lab clean

setup: $(STAMP)

$(STAMP): scripts/setup.sh pyproject.toml
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# on a CUDA machine (or without this environment: PYTHONPATH=. python -m pytest tests/gpu)
test-gpu: setup
	$(PY) -m pytest tests/gpu $(PYTEST_ARGS)

figures: setup
	$(PY) -m swaa.cli reproduce

lab: setup
	$(PY) -m ipykernel install --sys-prefix --name swaa --display-name "swaa (.venv)" >/dev/null
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks

clean:
	rm -rf out .pytest_cache
