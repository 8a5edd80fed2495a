# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUNTIME := $(VENV)/.installed
# The quick loop leaves out the tests that drive real PostgreSQL, S3 and Chromium (markers
# set from the fixtures a test uses, in tests/conftest.py) and the container image's.
QUICK := not postgres and not s3 and not browser and not container

.PHONY: run test test-quick fuzz check fmt bench clean image image-test

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(RUNTIME)
	$(BIN)/kvbox serve

test: $(STAMP)
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m pytest --cov=kvbox --cov-report=term

test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "$(QUICK)"

# The fuzzing suite with ten times the examples and new random inputs on each run, on every
# backend as in `make test`. About 5 minutes on 2 cores.
fuzz: $(STAMP)
	./scripts/ensure-system-packages.sh
	KVBOX_FUZZ_SCALE=$${KVBOX_FUZZ_SCALE:-10} $(BIN)/python -m pytest -p no:cacheprovider tests/fuzz

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# The server image, kvbox:VERSION, built with podman from a local Debian base and wheels made
# here (no registry, no network in the build); BASE=IMAGE for another base. See Containerfile.
image: $(STAMP)
	./scripts/ensure-system-packages.sh
	PYTHON=$(BIN)/python ./scripts/image.sh

# Build the image and test it: the official client, a restart on its volume, SIGTERM, PostgreSQL + S3.
# `make test` runs these tests too.
image-test: $(STAMP)
	./scripts/ensure-system-packages.sh
	$(BIN)/python -m pytest -m container tests/container

bench: $(STAMP)
	sh bench/ensure_tools.sh
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build src/*.egg-info
