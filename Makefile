# The two commands of the README. Each sets up what it needs in .venv first.
#   make demo              the embedded broker, a worker, traffic and a live view (Ctrl-C stops; SECONDS=60 stops by itself)
#   make test              the whole test suite (what CI runs: .ci/run)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SECONDS ?=

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamwarden demo $(if $(SECONDS),--seconds $(SECONDS),)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
