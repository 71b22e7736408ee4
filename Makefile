# distrec: one place for set-up, the demo job and the checks. `make help` lists targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NPROC  ?= 2
DEMO   ?= data/demo
export OMP_NUM_THREADS ?= 1
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: help setup install-gpu demo test lint typecheck pytest clean

help:
	@echo "make demo    set up the venv, then synthetic logs -> Spark bundle -> 2-rank training -> evaluate -> top-K"
	@echo "make test    lint, format check, type check and the test suite (what CI runs)"
	@echo "make setup   only create $(VENV) with the CPU stack (no CUDA packages)"

$(BIN)/.installed: pyproject.toml tools/fbgemm_shim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

setup: $(BIN)/.installed

# GPU machines: CUDA torch + the real fbgemm-gpu wheel in place of the CPU shim (same pins).
install-gpu:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 fbgemm-gpu==1.8.0 --index-url https://download.pytorch.org/whl/cu128
	$(BIN)/pip install -q --no-deps torchrec==1.8.0
	$(BIN)/pip install -q -e '.[dev]' --no-deps
	$(BIN)/pip install -q tensordict==0.15.3 torchmetrics==1.0.3 pyre-extensions==0.0.32 iopath==0.1.10 \
	    pyspark==4.3.0 pandas==2.3.3 pyarrow==26.0.1 numpy==2.4.6 prometheus-client==0.26.0 pyyaml tqdm scipy

demo: setup
	$(BIN)/python -m distrec.synth --kind multibehavior --users 3000 --items 1500 --out $(DEMO)/raw --seed 0
	$(BIN)/python -m spark_jobs.build_bundle --source synth --input $(DEMO)/raw --out $(DEMO)/bundle split=random_per_user
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m distrec.train lightgcn \
	    --config configs/lightgcn/synth.yaml data.bundle=$(DEMO)/bundle run.dir=$(DEMO)/run
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m distrec.evaluate --run-dir $(DEMO)/run --split test
	$(BIN)/python -m distrec.recommend --run-dir $(DEMO)/run --split test --k 20 --out $(DEMO)/topk.parquet
	@echo "demo done: run dir $(DEMO)/run, top-K export $(DEMO)/topk.parquet"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest -q -ra --durations=15

test: lint typecheck
	@if [ -x scripts/ci_deps.sh ]; then scripts/ci_deps.sh; fi
	$(MAKE) pytest

clean:
	rm -rf $(DEMO) runs .pytest_cache .mypy_cache .ruff_cache
