# srm-zoo: `make demo` verifies the accuracy of the zoo's embedded model; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_DATA ?= data/sklearn-digits
DEMO_MODEL ?= srm_resnet20_cifar.sklearn_digits

.PHONY: demo test install install-dev cards clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e '.[demo]'

install-dev: $(PY)
	$(PY) -m pip install -q -e '.[dev]'

demo: install
	$(VENV)/bin/srm-zoo list
	test -f $(DEMO_DATA)/digits.json || $(VENV)/bin/srm-zoo digits --out $(DEMO_DATA)
	HF_HUB_OFFLINE=1 $(VENV)/bin/srm-zoo eval --model $(DEMO_MODEL) --data $(DEMO_DATA) --verify \
		--results-file $(DEMO_DATA)/results.json

cards: install
	$(VENV)/bin/srm-zoo cards

test: install-dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache data
