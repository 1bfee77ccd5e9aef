# pacer — the two commands are `make run` and `make test`.
SHELL := /bin/bash

# Builds go to a target directory outside the clone, so a fresh clone (and
# CI) reuses what an earlier build compiled: the AWS SDK alone takes minutes.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pacer/target
CARGO ?= cargo
VENV := .venv
MOTO_VERSION := 5.2.5
DATA_DIR := data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-deps build check fmt clippy clean-data

## Run pacer locally on its embedded default (SQLite, in-process queue,
## simulated fleet) at http://127.0.0.1:3000. The first run writes
## $(DATA_DIR)/pacer.yaml with fresh secrets.
run:
	$(CARGO) build -p pacer
	$(CARGO_TARGET_DIR)/debug/pacer serve --config $(DATA_DIR)/pacer.yaml --init

build:
	$(CARGO) build --workspace

## Install what the tests need, then run every test.
test: test-deps
	shellcheck infra/runner/bootstrap.sh
	$(CARGO) test --workspace --no-fail-fast

## The test dependencies: a Python venv with moto_server (AWS APIs), npm
## packages under tests/, Debian's shellcheck and pebble (a test ACME CA).
test-deps: $(VENV)/.moto-$(MOTO_VERSION) apt-deps tests/node_modules/.package-lock.json

# GitHub's OpenAPI description, real webhook payloads and oidc-provider (the
# SSO tests' OpenID Provider), pinned by the lock.
tests/node_modules/.package-lock.json: tests/package.json tests/package-lock.json
	npm ci --prefix tests --no-audit --no-fund

# Debian packages the tests use; installed only when missing.
APT_PACKAGES := shellcheck pebble
.PHONY: apt-deps
apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.moto-$(MOTO_VERSION):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
	touch $@

check:
	$(CARGO) check --workspace --all-targets

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf $(DATA_DIR)
