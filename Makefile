# lossgen: `make generate` sets everything up and emits generated/; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: generate bench-generate test fixtures report check list bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

generate: $(STAMP)
	$(PY) -m lossgen generate
	$(PY) -m lossgen reference

bench-generate: $(STAMP)
	$(PY) benchmarks/bench_generate.py

test: $(STAMP)
	$(PY) -m pytest -q

fixtures: $(STAMP)
	$(PY) -m lossgen fixtures

report: $(STAMP)
	$(PY) -m lossgen report

# training speed against torch and optax; e.g. `make bench BENCH_ARGS="--sizes 16,20 --quick"`
bench: $(STAMP)
	$(PY) benchmarks/bench_train.py $(BENCH_ARGS)

check: $(STAMP)
	$(PY) -m lossgen check specs/*.yaml

list: $(STAMP)
	$(PY) -m lossgen list

clean-venv:
	rm -rf $(VENV)
