# The product's interface: `make demo`, `make dev`, `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
API_PORT ?= 8080

.PHONY: help setup check-tools demo dev test test-unit fuzz lint bundle bench chaos clean

help:
	@echo "make demo   set up, start the stack, generate 2 images into demo-output/, stop"
	@echo "make dev    run the whole local stack in the foreground (API on :$(API_PORT))"
	@echo "make test   run every test (starts and stops the emulators it needs)"
	@echo "make fuzz   schemathesis against a fresh stack's /openapi.json (FUZZ_ARGS=\"--seed 7\")"
	@echo "make bench  performance benchmark on a fresh local stack (< 10 min): bench/results/latest.json"
	@echo "make chaos  soak a fresh stack: 200 generations under fal faults and crashes (CHAOS_ARGS=\"--seed 7\")"
	@echo "make lint   terraform fmt -check, ruff, checkov over terraform/"
	@echo "make bundle deployment zips dist/<function>.zip (main.py, imagegen/, pinned requirements.txt)"

# uv installs exactly what uv.lock pins; it is fetched from PyPI if the machine lacks it.
$(VENV)/.synced: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@UV_PYTHON_DOWNLOADS=never python3 -m uv sync --frozen --quiet
	@touch $@

# The Cloud Tasks emulator pins protobuf<5: it gets a venv of its own.
.venv-tasks/.synced: infra/tasks-emulator-requirements.txt
	@python3 -m uv venv --quiet --allow-existing .venv-tasks --python python3
	@python3 -m uv pip install --quiet --python .venv-tasks/bin/python -r $<
	@touch $@

setup: $(VENV)/.synced .venv-tasks/.synced check-tools

check-tools:
	@command -v java >/dev/null || { echo "error: Java (17+) is required by the Firestore and Pub/Sub emulators: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
	@command -v gcloud >/dev/null || { echo "error: the gcloud CLI is required for the Firestore and Pub/Sub emulators (https://cloud.google.com/sdk/docs/install)" >&2; exit 1; }
	@gcloud emulators firestore --help >/dev/null 2>&1 || { echo "error: the Firestore emulator is missing: gcloud components install cloud-firestore-emulator (or apt-get install google-cloud-cli-firestore-emulator)" >&2; exit 1; }
	@gcloud beta emulators pubsub --help >/dev/null 2>&1 || { echo "error: the Pub/Sub emulator is missing: gcloud components install pubsub-emulator beta (or apt-get install google-cloud-cli-pubsub-emulator)" >&2; exit 1; }
	@command -v openssl >/dev/null || { echo "error: the openssl command is required by make test (a unit test checks the local CA directory's hash against OpenSSL's own): apt-get install openssl" >&2; exit 1; }

demo: setup
	@$(PY) -m infra.demo

dev: setup
	@API_PORT=$(API_PORT) $(PY) -m infra.stack dev

test: setup
	@$(PY) -m pytest -q

fuzz: setup
	@$(PY) -m infra.fuzz $(FUZZ_ARGS)

# The performance benchmark (bench/README.md): its own stack, stops by itself.
bench: setup
	@$(PY) -m infra.bench

# The chaos soak (infra/chaos.py): its own stack, mixed fal faults, the webhook and the
# dispatcher crashed once each; bounded (< 10 min), exits 1 on a broken invariant.
chaos: setup
	@$(PY) -m infra.chaos $(CHAOS_ARGS)

test-unit: $(VENV)/.synced
	@$(PY) -m pytest -q tests/unit

# Static checks, nothing started: Terraform formatting, ruff, and checkov over terraform/
# (no failed check; each skip is in the code with its reason).
lint: $(VENV)/.synced
	@command -v terraform >/dev/null || { echo "error: terraform (1.6+) is required by make lint: https://developer.hashicorp.com/terraform/install" >&2; exit 1; }
	@terraform fmt -check -recursive terraform/
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/checkov -d terraform --framework terraform --skip-download --quiet --compact
	@$(VENV)/bin/mypy shared/imagegen functions infra

# What Terraform deploys; needs only the synced venv (no emulators). See infra/bundle.py.
bundle: $(VENV)/.synced
	@$(PY) -m infra.bundle --out dist

clean:
	rm -rf .dev demo-output .pytest_cache .venv-tasks
