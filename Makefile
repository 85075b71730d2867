# lossgen: `make generate` sets everything up and emits generated/; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: generate test fixtures report check list clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

generate: $(STAMP)
	$(PY) -m lossgen generate

test: $(STAMP)
	$(PY) -m pytest -q

fixtures: $(STAMP)
	$(PY) -m lossgen fixtures

report: $(STAMP)
	$(PY) -m lossgen report

check: $(STAMP)
	$(PY) -m lossgen check specs/*.yaml

list: $(STAMP)
	$(PY) -m lossgen list

clean-venv:
	rm -rf $(VENV)
