# pacer — the two commands are `make run` and `make test`.
SHELL := /bin/bash

# Builds go to a target directory outside the clone, so a fresh clone (and
# CI) reuses what an earlier build compiled: the AWS SDK alone takes minutes.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pacer/target
CARGO ?= cargo
VENV := .venv
MOTO_VERSION := 5.2.5
# The Lambda tooling, in the same venv: the template's linters, sam for
# `make deploy`, cargo-lambda (it brings zig) for the function zips, and the
# aws CLI for the console upload.
SAM_CLI_VERSION := 1.170.0
CFN_LINT_VERSION := 1.58.0
CARGO_LAMBDA_VERSION := 1.9.2
AWSCLI_VERSION := 1.46.3
LAMBDA_TOOLS := $(VENV)/.lambda-tools-$(SAM_CLI_VERSION)-$(CFN_LINT_VERSION)-$(CARGO_LAMBDA_VERSION)-$(AWSCLI_VERSION)
DATA_DIR := data
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-deps build check fmt clippy clean-data

## Run pacer locally on its embedded default (SQLite, in-process queue,
## simulated fleet) at http://127.0.0.1:3000. The first run writes
## $(DATA_DIR)/pacer.yaml with fresh secrets.
run: web
	$(CARGO) build -p pacer
	$(CARGO_TARGET_DIR)/debug/pacer serve --config $(DATA_DIR)/pacer.yaml --init

build:
	$(CARGO) build --workspace

## Install what the tests need, then run every test.
test: test-deps web
	shellcheck infra/runner/bootstrap.sh
	shellcheck infra/self-service/pacer-runner.sh
	$(MAKE) --no-print-directory lint-template
	$(CARGO) fmt --all --check
	$(CARGO) build --workspace --bins
	$(MAKE) --no-print-directory clippy
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory test-build-once
	$(MAKE) --no-print-directory test-browser
	$(MAKE) --no-print-directory test-no-failpoints

## The web console (Svelte + Vite) built into web/dist, which `pacer serve`
## serves (and release builds embed); npm ci runs only when the lock changed,
## and the build only when a source of the console did: a rebuilt dist makes
## cargo rebuild the binary that embeds it.
.PHONY: web test-browser
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null) web/index.html \
  web/vite.config.ts web/svelte.config.js web/tsconfig.json web/package.json
web: web/dist/index.html

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	npm run build --prefix web

## Rewrites web/src/lib/types.ts, the console's copy of the API's types,
## from the Rust types (shared/src/http/typescript.rs); the test there fails
## while the file is out of date.
.PHONY: types
types:
	PACER_WRITE_TYPES=1 $(CARGO) test -p pacer-shared --lib http::typescript

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund

## The console in Debian's Chromium (playwright-core) against the real binary
## on a fresh store; screenshots of every page go to web/test-results/.
## Each test may take 5 minutes and the runner exits when the last one ends,
## so nothing left running can hold CI; the whole suite takes about 3 minutes,
## and `timeout` stops it (and fails) at 20.
test-browser: web apt-deps tests/node_modules/.package-lock.json
	# The workspace's binaries, as `make test` builds them: building `-p pacer`
	# alone would unify features differently and recompile dozens of crates.
	$(CARGO) build --workspace --bins
	# The console against the generated API types (make types).
	npm run check --prefix web
	PACER_BIN=$(CARGO_TARGET_DIR)/debug/pacer timeout --kill-after=30s 20m npm test --prefix web

## `make test` builds each crate once: after the tests, building the
## workspace's binaries again must find every crate fresh. It fails when a
## build script reruns on every build (say, one watching a file that does not
## exist) or when two builds of the same binaries resolve features
## differently.
.PHONY: test-build-once
test-build-once:
	@out=$$($(CARGO) build --workspace --bins 2>&1) || { echo "$$out" >&2; exit 1; }; \
	if echo "$$out" | grep -q '^ *Compiling '; then \
	  echo "$$out" >&2; echo "building the workspace a second time recompiled the crates above" >&2; exit 1; \
	fi; echo "a second build of the workspace compiled nothing"

## A default build carries no failpoints (shared/src/failpoint.rs). The
## workspace's `pacer`, built with the tests' `failpoints` feature, must hold
## the variable and every name (so the check can fail); then `cargo build -p
## pacer`, as `make run` builds it (and leaves it ready), must hold none.
## The check reads the debug binary: a feature compiled out is out of a
## release build too, which differs only in optimisation.
FAILPOINT_STRINGS := PACER_FAILPOINTS after_job_insert after_hint_sent after_launch after_jit_mint
.PHONY: test-no-failpoints
test-no-failpoints:
	$(CARGO) build --workspace --bins
	@for s in $(FAILPOINT_STRINGS); do \
	  grep -qaF "$$s" $(CARGO_TARGET_DIR)/debug/pacer || { echo "the tests' pacer lacks $$s: this check would prove nothing" >&2; exit 1; }; \
	done
	$(CARGO) build -p pacer
	@for s in $(FAILPOINT_STRINGS); do \
	  if grep -qaF "$$s" $(CARGO_TARGET_DIR)/debug/pacer; then echo "a default build of pacer contains $$s" >&2; exit 1; fi; \
	done
	@echo "a default build of pacer contains no failpoints"

## The test dependencies: a Python venv with moto_server (AWS APIs), npm
## packages under tests/, Debian's shellcheck and pebble (a test ACME CA).
test-deps: $(VENV)/.moto-$(MOTO_VERSION) apt-deps tests/node_modules/.package-lock.json

# GitHub's OpenAPI description, real webhook payloads and oidc-provider (the
# SSO tests' OpenID Provider), pinned by the lock.
tests/node_modules/.package-lock.json: tests/package.json tests/package-lock.json
	npm ci --prefix tests --no-audit --no-fund

# Debian packages the tests use; installed only when missing.
APT_PACKAGES := shellcheck pebble chromium
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

$(LAMBDA_TOOLS): $(VENV)/.moto-$(MOTO_VERSION)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==$(SAM_CLI_VERSION)' \
	  'cfn-lint==$(CFN_LINT_VERSION)' 'cargo-lambda==$(CARGO_LAMBDA_VERSION)' 'awscli==$(AWSCLI_VERSION)'
	touch $@

# sam, cargo-lambda and the aws CLI from the venv; cargo-lambda finds zig
# through the venv's python3.
TOOLS_PATH := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
SAM := SAM_CLI_TELEMETRY=0 $(TOOLS_PATH) sam
AWS := $(TOOLS_PATH) aws

## template.yaml is valid CloudFormation and SAM (offline, no AWS account).
.PHONY: lint-template
lint-template: $(LAMBDA_TOOLS)
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --template template.yaml

## Every Lambda as a zip (cargo lambda, release profile) for this machine's
## architecture, or ARCH=arm64 / ARCH=x86_64; prints each zip's size.
LAMBDA_FUNCTIONS := webhook api runner orchestrator reaper
HOST_ARCH := $(shell uname -m | sed 's/aarch64/arm64/')
ARCH ?= $(HOST_ARCH)
.PHONY: package
package: $(LAMBDA_TOOLS)
	@case "$(ARCH)" in arm64|x86_64) ;; *) echo "ARCH must be arm64 or x86_64, not $(ARCH)" >&2; exit 1;; esac
	@if [ "$(ARCH)" != "$(HOST_ARCH)" ]; then \
	  target=$$([ "$(ARCH)" = arm64 ] && echo aarch64 || echo x86_64)-unknown-linux-gnu; \
	  rustup target list --installed 2>/dev/null | grep -qx "$$target" || { \
	    echo "ARCH=$(ARCH) needs the $$target Rust target: rustup target add $$target" >&2; exit 1; }; \
	fi
	$(TOOLS_PATH) $(CARGO) lambda build --release --$(subst x86_64,x86-64,$(ARCH)) --output-format zip \
	  $(addprefix --bin ,$(LAMBDA_FUNCTIONS))
	@for f in $(LAMBDA_FUNCTIONS); do \
	  zip=$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap.zip; \
	  printf '%-13s %7s  %s\n' "$$f" "$$(numfmt --to=iec --suffix=B $$(stat -c %s $$zip))" "$$zip"; \
	done

## Deploy to AWS: sam build + sam deploy (samconfig.toml; CONFIG_ENV picks
## its section), then the console to the stack's bucket and a CloudFront
## invalidation. Needs AWS credentials (AWS_PROFILE / AWS_REGION).
CONFIG_ENV ?= default
.PHONY: deploy
deploy: $(LAMBDA_TOOLS) web
	$(SAM) build --config-env $(CONFIG_ENV)
	$(SAM) deploy --config-env $(CONFIG_ENV)
	@outputs=$$($(SAM) list stack-outputs --config-env $(CONFIG_ENV) --output json) || exit 1; \
	output() { python3 -c 'import json, sys; print({o["OutputKey"]: o["OutputValue"] for o in json.load(sys.stdin)}[sys.argv[1]])' "$$1" <<<"$$outputs"; }; \
	bucket=$$(output ConsoleBucketName) && distribution=$$(output DistributionId) || exit 1; \
	set -x; \
	$(AWS) s3 sync web/dist/assets "s3://$$bucket/assets" --delete --cache-control 'public, max-age=31536000, immutable' && \
	$(AWS) s3 sync web/dist "s3://$$bucket" --delete --exclude 'assets/*' --cache-control 'no-cache' && \
	$(AWS) cloudfront create-invalidation --distribution-id "$$distribution" --paths '/*' --query Invalidation.Id --output text && \
	{ set +x; } 2>/dev/null && \
	echo "console:                    $$(output ConsoleUrl)" && \
	echo "GitHub App webhook URL:     $$(output WebhookUrl)" && \
	echo "pools' instance_profile:    $$(output RunnerInstanceProfileName)"

## Measure pacer on this machine: an optimised build (the `bench`
## profile: no fat LTO, same target directory) of the bench and of the five
## functions (their cold starts), every benchmark, one table on stdout and
## the same figures in target/bench/results.json. Zip sizes come from the
## last `make package`. See README "Performance". BENCH_ARGS="--only burst"
## picks benchmarks.
.PHONY: bench
bench: $(VENV)/.moto-$(MOTO_VERSION) tests/node_modules/.package-lock.json
	$(CARGO) build --profile bench $(addprefix -p ,$(LAMBDA_FUNCTIONS))
	$(CARGO) run --profile bench -p pacer-bench -- $(BENCH_ARGS)

check:
	$(CARGO) check --workspace --all-targets

## Lints, warnings as errors. shared/ also denies indexing, slicing, unwrap
## and expect outside its tests (shared/src/lib.rs): a panic on outside
## input would abort a release build.
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Formats every crate in rustfmt's default style; `make test` refuses
## code that is not.
fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf $(DATA_DIR)
