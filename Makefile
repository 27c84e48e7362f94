# polycorpus: one target per stage. `make corpus` builds the sample corpus end to end,
# `make test` runs the test suite. Both set up the environment first when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Your own files: INPUT='path/or/uri/*.jsonl.gz' FORMAT=jsonl [TIER=web] [FIELDS='text=content id=doc_id']
# [SET='dedup.threshold=0.7 ...'] (no YAML needed; INPUT replaces the sample's sources, OUT defaults to build/own).
INPUT ?=
FORMAT ?=
TIER ?=
FIELDS ?=
SET ?=
OUT ?= $(if $(INPUT),build/own,build/sample)
DATA ?= ../shared/data
CONFIG ?= configs/pipeline.yaml
MASTER ?=
INPUT_ARGS = $(if $(INPUT),--input '$(INPUT)',--data-root $(DATA)) $(if $(FORMAT),--format $(FORMAT),) \
	$(if $(TIER),--tier $(TIER),) $(foreach f,$(FIELDS),--field '$(f)') $(foreach s,$(SET),--set '$(s)')
STAGE_ARGS = --out $(OUT) --config $(CONFIG) $(INPUT_ARGS) $(if $(MASTER),--master $(MASTER),)
STAMP := $(VENV)/.setup-done

.PHONY: tools quality-models help setup system-deps corpus ingest langid rules quality dedup shard report test test-fast bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

setup: $(STAMP) tools  ## create .venv and install everything (system packages, KenLM's lmplz too, when missing)

system-deps:  ## Java 17 for Spark, compilers and boost for KenLM, Chromium for the report test (apt-get, only when missing; log in build/logs/setup.log)
	@bash scripts/system_deps.sh

# Setup is quiet: pip's and apt's output go to $(SETUP_LOG); a failure prints the log's tail.
SETUP_LOG ?= build/logs/setup.log
QUIET = scripts/quiet.sh $(SETUP_LOG)

$(STAMP): pyproject.toml scripts/system_deps.sh
	@SETUP_LOG=$(SETUP_LOG) $(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(QUIET) "python -m venv" $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (log: $(SETUP_LOG))"
	@$(QUIET) "pip install pip/setuptools/wheel" $(PY) -m pip install --upgrade "pip==25.3" "setuptools==80.9.0" "wheel==0.45.1"
	@$(QUIET) "pip install -e .[test,bench]" $(PY) -m pip install -e ".[test,bench]"
	@touch $(STAMP)

corpus: setup  ## build the corpus (all configured stages + report) from the sample, or INPUT='files/*.jsonl.gz' FORMAT=jsonl; MASTER=spark://... submits to a cluster
	$(if $(CLUSTER_MASTER),$(CLUSTER_SUBMIT),$(PY) -m jobs.build_corpus $(STAGE_ARGS))

ingest langid rules quality dedup shard: setup  ## run one stage on the previous stage's output
	$(if $(CLUSTER_MASTER),$(CLUSTER_SUBMIT) --stages $@ --no-report,$(PY) -m jobs.$@ $(STAGE_ARGS))

report: setup  ## rewrite report.json / report.html from the stage stats
	$(PY) -m jobs.report $(STAGE_ARGS)

test: setup  ## run the whole test suite
	$(VENV)/bin/pytest -q tests

test-fast: setup  ## the tests not marked slow or cluster (unit tests and small end-to-end checks)
	$(VENV)/bin/pytest -q -m "not slow and not cluster" tests

bench: setup  ## run every benchmark in bench/ except bench-scale (1M documents) and bench-instruct, print the figures
	@set -e; rm -f build/bench/ratios.jsonl; for f in bench/bench_*.py; do case "$$f" in bench/bench_scale.py|bench/bench_instruct.py) continue;; esac; echo "=== $$f"; $(PY) $$f; done; $(PY) bench/summary.py build/bench/ratios.jsonl

.PHONY: eval-extract
eval-extract: setup  ## HTML main-content extraction on web-html/evaldata.json: ours vs the library defaults
	$(PY) -m pipeline.extract --data-root $(DATA) --all

tools: $(STAMP)  ## build KenLM's lmplz and build_binary from the kenlm sdist into .venv/bin (once)
	@bash tools/build_kenlm.sh $(VENV)

quality-models: $(STAMP) tools  ## train the quality models (SentencePiece + KenLM per language, fastText classifier) from $(OUT)/langid
	$(PY) -m jobs.train_quality_models --out $(OUT) --config $(CONFIG) $(if $(FORCE),--force,)

# --- tokenizer and token shards (issue 5)
.PHONY: tokenizer tokenize
TOK_CONFIG ?= configs/tokenizer.yaml
TOK_PROFILE ?= sample
TOK_ARGS = --out $(OUT) --config $(TOK_CONFIG) --profile $(TOK_PROFILE)

tokenizer: setup  ## train the SentencePiece BPE tokenizer on $(OUT)/corpus + compression report (TOK_PROFILE=full: 256K)
	@test -f $(OUT)/corpus/.SUCCESS || $(MAKE) --no-print-directory corpus
	$(PY) -m jobs.tokenizer $(TOK_ARGS) --data-root $(DATA)

tokenize: setup  ## Spark: $(OUT)/corpus -> token shards + manifest in $(OUT)/tokens (trains the tokenizer if missing)
	@test -f $(OUT)/tokenizer/_SUCCESS || $(MAKE) --no-print-directory tokenizer
	$(PY) -m jobs.tokenize $(TOK_ARGS) $(if $(MASTER),--master $(MASTER),)

# --- training (issue 6): small PolyLM on the sample token shards; NPROC=2 runs torchrun + FSDP (gloo)
.PHONY: train lr-find
NPROC ?= 1
TRAIN_CONFIG ?= configs/train/sample-small.yaml
TRAIN_ARGS ?=
LR_FIND_ARGS ?= --steps 150 --ramp exp --min-lr 1e-5 --max-lr 0.3
TRAIN_LAUNCH = $(if $(filter-out 1,$(NPROC)),TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 $(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC),$(PY))

# token shards are current when $(OUT)/tokens/_SUCCESS is newer than the corpus, the tokenizer and
# $(TOK_CONFIG); `make tokenize` always re-tokenizes
TOKENS_STALE = $(shell test -f $(OUT)/tokens/_SUCCESS && test -z "$$(find $(OUT)/corpus/_SUCCESS $(OUT)/tokenizer/_SUCCESS $(TOK_CONFIG) -newer $(OUT)/tokens/_SUCCESS 2>/dev/null)" || echo stale)

.PHONY: tokens
tokens: setup  ## token shards in $(OUT)/tokens: tokenize only when missing or older than corpus/tokenizer/TOK_CONFIG
	$(if $(TOKENS_STALE),@$(MAKE) --no-print-directory tokenize,@echo "token shards in $(OUT)/tokens are current (make tokenize re-tokenizes)")

train: tokens  ## pretrain a small PolyLM on $(OUT)/tokens with the curriculum (NPROC=2: FSDP on gloo)
	$(TRAIN_LAUNCH) -m training.train --config $(TRAIN_CONFIG) --set data.tokens_dir=$(OUT)/tokens $(TRAIN_ARGS)

lr-find: tokens  ## ramp the LR during warmup, report where the grad norm surges (build/lr_find/lr_find.png)
	$(TRAIN_LAUNCH) -m jobs.lr_find --config $(TRAIN_CONFIG) --set data.tokens_dir=$(OUT)/tokens --out build/lr_find $(LR_FIND_ARGS)

# --- model (issue 6): model facts, Hugging Face export, training-throughput benchmark
.PHONY: model-summary export bench-train
EXPORT_OUT ?= $(OUT)/hf
EXPORT_ARGS ?=

model-summary: setup  ## parameters, FLOPs/token of polylm-1.7b / 13b; per-GPU memory budget beside PyTorch's FSDP2 tracker (fake tensors, CPU; ~2 min) for 1.7B/8 and 13B/64 GPUs
	$(PY) -m training.model --summary
	$(PY) -m training.memory

export: setup  ## export the newest `make train` checkpoint to a HF GPT2LMHeadModel + tokenizer in $(OUT)/hf
	$(PY) -m jobs.export --config $(TRAIN_CONFIG) --set data.tokens_dir=$(OUT)/tokens --out $(EXPORT_OUT) $(EXPORT_ARGS)

BENCH_TRAIN_ARGS ?=
bench-train: setup  ## training tokens/s on CPU: PolyLM vs transformers GPT2LMHeadModel of the same shape, interleaved rounds (BENCH_TRAIN_ARGS: e.g. --threads 2 --profile 3)
	$(PY) bench/bench_train.py $(BENCH_TRAIN_ARGS)

.PHONY: gpu-check
GPU_CHECK_ARGS ?=
gpu-check: setup  ## on CUDA: small config bf16+NCCL (torchrun, all GPUs) vs CPU fp32 loss curve, tokens/s, MFU, memory; 1.7B-width MFU (< 8 min); without CUDA says so
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# --- multilingual self-instruct (issue 17): MultiAlpaca-style tasks, Spark Rouge-L diversity filter
.PHONY: instruct bench-instruct
INSTRUCT_CONFIG ?= configs/instruct.yaml
INSTRUCT_ARGS ?= --canned-server

instruct: setup  ## self-instruct rounds -> $(OUT)/instruct/lang=xx + stats.json (+ the report section when a corpus report exists) (default: canned test server; INSTRUCT_ARGS="--set generator.base_url=URL" for a model)
	$(PY) -m jobs.instruct --out $(OUT) --config $(INSTRUCT_CONFIG) --data-root $(DATA) $(INSTRUCT_ARGS)
	@if [ -f $(OUT)/report.json ]; then $(PY) -m jobs.report $(STAGE_ARGS); fi  # the report's self-instruct section

bench-instruct: setup  ## diversity filter: Spark job vs the plain sequential Rouge-L filter on 20,000 synthetic instructions
	$(PY) bench/bench_instruct.py

.PHONY: sft
SFT_CONFIG ?= configs/train/sft-tiny.yaml
SFT_BASE ?= $(EXPORT_OUT)
SFT_ARGS ?=

sft: setup  ## instruction fine-tuning of SFT_BASE (HF export dir, default $(OUT)/hf; or a DCP root with SFT_ARGS="--set base.config=TRAIN_CONFIG") on $(OUT)/instruct -> build/sft (+ hf/); NPROC=2: FSDP
	$(TRAIN_LAUNCH) -m jobs.sft --config $(SFT_CONFIG) --set base.path=$(SFT_BASE) --set data.instruct_dir=$(OUT)/instruct $(SFT_ARGS)

clean:  ## remove build outputs (keeps .venv)
	rm -rf build spark-warehouse metastore_db derby.log

# --- evaluation (issue 18): per-language bits per byte + XCOPA + NTREX translation on a checkpoint
.PHONY: eval
EVAL_TASKS ?= heldout,xcopa,ntrex
EVAL_ARGS ?=

eval: setup  ## evaluate the newest `make train` checkpoint (EVAL_TASKS, SHOTS=K, EVAL_ARGS='--checkpoint hf/ ...') -> $(OUT)/eval
	$(PY) -m jobs.eval --config $(TRAIN_CONFIG) --set data.tokens_dir=$(OUT)/tokens --tasks $(EVAL_TASKS) --shots $(or $(SHOTS),0) --data-root $(DATA) --out $(OUT)/eval $(EVAL_ARGS)

# --- cluster (issue 7): Spark standalone master + 2 workers on 127.0.0.1 (jobs/cluster.py).
# `make corpus MASTER=spark://127.0.0.1:7077` runs every stage with spark-submit (--py-files
# build/pyfiles.zip, --files the model files); MASTER=local[...] or unset keeps the local path.
.PHONY: cluster-up cluster-down cluster-status pyfiles bench-scale
CLUSTER_ROOT ?= build/cluster
CLUSTER_ARGS ?=
CLUSTER_MASTER = $(filter-out local%,$(MASTER))
CLUSTER_SUBMIT = $(PY) -m jobs.cluster submit --master $(MASTER) --out $(OUT) --config $(CONFIG) $(INPUT_ARGS)

cluster-up: setup  ## start a Spark standalone master (spark://127.0.0.1:7077, UI :8080) and 2 workers
	$(PY) -m jobs.cluster up --root $(CLUSTER_ROOT) $(CLUSTER_ARGS)

cluster-down:  ## stop the standalone cluster started by cluster-up
	$(PY) -m jobs.cluster down --root $(CLUSTER_ROOT)

cluster-status: setup  ## workers and applications of the running cluster
	$(PY) -m jobs.cluster status --root $(CLUSTER_ROOT)

pyfiles: setup  ## build/pyfiles.zip: pipeline/ filters/ training/ jobs/ sources for spark-submit --py-files
	$(PY) -m jobs.cluster pyfiles --dest build/pyfiles.zip

# --- shipped environment (issue 15): venv-pack archive passed with --archives ...#env.
.PHONY: pack-env cluster-submit
SUBMIT_ARGS ?=
pack-env: setup  ## build/env/env-<hash>.tar.gz: the virtualenv for spark-submit --archives (rebuilt only when packages change)
	$(PY) -m jobs.cluster pack-env --env-dir build/env

cluster-submit: setup  ## submit the configured stages to MASTER with the shipped venv, code and models (SUBMIT_ARGS: --force, --from-stage X, --conf k=v)
	$(PY) -m jobs.cluster submit --master $(MASTER) --out $(OUT) --config $(CONFIG) --data-root $(DATA) $(SUBMIT_ARGS)

BENCH_SCALE_N ?= 1000000
BENCH_SCALE_ARGS ?=
bench-scale: setup  ## whole corpus build in local[2] on BENCH_SCALE_N/4 then BENCH_SCALE_N synthetic crawl-like documents with planted near-duplicates: per-stage times, docs/s per core, memory, growth (BENCH_SCALE_ARGS: more bench_scale.py options)
	$(PY) bench/bench_scale.py --docs $(BENCH_SCALE_N) $(BENCH_SCALE_ARGS)
