# ferbench: `make demo` runs the pipeline offline on synthetic data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo real app serve test test-fast lint clean-demo help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $(INSTALLED)

install: $(INSTALLED)  ## create .venv, install the pinned requirements and ferbench itself (editable, with its commands)

demo: $(INSTALLED)  ## run the whole pipeline offline on synthetic data, in demo/ (params-demo.yaml)
	$(PY) -m ferbench.workflow.workspace demo --update

real: $(INSTALLED)  ## the CPU preset on real FER-2013 in runs/real-cpu/ (Kaggle credentials; offline: params-local.yaml or ARCHIVE=zip)
	$(PY) -m ferbench.workflow.workspace runs/real-cpu --update --overrides params-cpu.yaml \
		$(if $(wildcard params-local.yaml),--overrides params-local.yaml) \
		$(if $(ARCHIVE),--set data.source=archive --set data.archive=$(ARCHIVE))

app: $(INSTALLED)  ## serve the webcam app on http://localhost:8501 (default: the released model; MODEL=DIR: another model folder; DETECTOR_MODEL=FILE: local YuNet)
	$(VENV)/bin/streamlit run streamlit_app.py -- $(if $(MODEL),--model $(MODEL)) $(if $(DETECTOR_MODEL),--detector-model $(DETECTOR_MODEL))

serve: $(INSTALLED)  ## serve the model over HTTP on http://127.0.0.1:8000 (OpenAPI at /docs; MODEL=DIR, DETECTOR_MODEL=FILE as for app)
	$(VENV)/bin/ferbench-serve $(if $(MODEL),--model $(MODEL)) $(if $(DETECTOR_MODEL),--detector-model $(DETECTOR_MODEL))

test: $(INSTALLED)  ## run the whole test suite (what CI runs), its modules spread over two processes
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: $(INSTALLED)  ## the edit loop: every test not marked slow (no dvc repro, no real data, no browser)
	$(PY) -m pytest -m "not slow"

lint: $(INSTALLED)  ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-demo:  ## remove the demo copy and its local DVC remote
	rm -rf demo demo-remote
