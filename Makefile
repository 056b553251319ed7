# Robostral Agent: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robostral-setup
# Offline by contract: nothing is ever fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
# Cross-process ROS tests stay on this host, in a domain chosen per run (tests add offsets).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export AMENT_PREFIX_PATH := $(abspath $(VENV)):$(AMENT_PREFIX_PATH)
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test lint demo bench model colcon-check clean help

# robostral-tiny: dataset size, training steps, evaluation scenes (see models/robostral-tiny).
MODEL_SCENES ?= 10000
MODEL_EVAL_SCENES ?= 500
CANDIDATE ?= data/runs/candidate

help:
	@echo "make demo   - run the demo on the embedded defaults (sets up on first use)"
	@echo "make test   - ruff + the whole test suite (sets up on first use)"
	@echo "make setup  - create/update $(VENV) (idempotent)"
	@echo "make lint   - ruff only"
	@echo "make bench  - run the benchmarks in bench/ and print their figures"
	@echo "make colcon-check - colcon build the package in a temporary workspace"
	@echo "make model  - regenerate the dataset, retrain and evaluate robostral-tiny (a candidate)"

setup: $(STAMP)

$(STAMP): tools/setup_env.sh requirements/ros.txt requirements/base.txt requirements/nodeps.txt setup.py setup.cfg package.xml
	VENV=$(VENV) bash tools/setup_env.sh
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( (RANDOM % 20) * 5 + 1 ))} \
		$(PY) -m pytest $(PYTEST_ARGS)

# The scripted demo on the embedded model: simulator, supervisor and agent as child processes
# (robostral demo --help); outputs in demo_output/. ROS_DOMAIN_ID is kept when set.
demo: $(STAMP)
	$(PY) -m robostral_agent.cli demo $(DEMO_ARGS)

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The shipped model's five stages (see models/robostral-tiny/README.md): 800 steps of a
# 2200-step schedule without the box-cell head; 800 of a 1400-step one with it; full
# schedules of 2000 and 1500 steps at batch 16; then 1000 steps with the task-kind head.
model: $(STAMP)
	$(PY) -m robostral_agent.training.data --out data/tiny --scenes $(MODEL_SCENES) --seed 1
	$(PY) -m robostral_agent.training.train --data data/tiny --out $(CANDIDATE)-stage1 \
		--steps 2200 --stop-at 800 --cell-head false --task-head 0 --log-every 25
	$(PY) -m robostral_agent.training.train --data data/tiny --out $(CANDIDATE)-stage2 \
		--steps 1400 --stop-at 800 --warmup 100 --lr 1e-3 --task-head 0 --log-every 25 \
		--init-from $(CANDIDATE)-stage1
	$(PY) -m robostral_agent.training.train --data data/tiny --out $(CANDIDATE)-stage3 \
		--steps 2000 --batch 16 --warmup 50 --lr 8e-4 --task-head 0 --log-every 25 \
		--init-from $(CANDIDATE)-stage2
	$(PY) -m robostral_agent.training.train --data data/tiny --out $(CANDIDATE)-stage4 \
		--steps 1500 --batch 16 --warmup 50 --lr 5e-4 --task-head 0 --log-every 25 \
		--init-from $(CANDIDATE)-stage3
	$(PY) -m robostral_agent.training.train --data data/tiny --out $(CANDIDATE) \
		--steps 1000 --batch 16 --warmup 50 --lr 4e-4 --task-head 3 --log-every 25 \
		--init-from $(CANDIDATE)-stage4
	$(PY) -m robostral_agent.training.evaluate --model $(CANDIDATE) \
		--scenes $(MODEL_EVAL_SCENES) --json $(CANDIDATE)/evaluation.json
	@echo "Candidate in $(CANDIDATE). Compare with models/robostral-tiny/README.md; release with"
	@echo "  $(PY) -m robostral_agent.training.release $(CANDIDATE)"

colcon-check: $(STAMP)
	bash tools/colcon_check.sh

clean:
	rm -rf build install log .pytest_cache .ruff_cache
