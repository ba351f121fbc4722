# ferbench: `make demo` runs the pipeline offline on synthetic data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo app test lint clean-demo help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(INSTALLED)

install: $(INSTALLED)  ## create .venv and install the pinned requirements

demo: $(INSTALLED)  ## run the whole pipeline offline on synthetic data, in demo/ (params-demo.yaml)
	$(PY) -m ferbench.workspace demo

app: $(INSTALLED)  ## serve the webcam app on http://localhost:8501 (MODEL=DIR: model folder; DETECTOR_MODEL=FILE: local YuNet)
	$(VENV)/bin/streamlit run streamlit_app.py -- $(if $(MODEL),--model $(MODEL)) $(if $(DETECTOR_MODEL),--detector-model $(DETECTOR_MODEL))

test: $(INSTALLED)  ## run the test suite
	$(PY) -m pytest

lint: $(INSTALLED)  ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-demo:  ## remove the demo copy and its local DVC remote
	rm -rf demo demo-remote
