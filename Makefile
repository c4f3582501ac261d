# Entry points of the project. `make test` is what CI runs (.ci/run) on a fresh machine:
# it installs what is missing, brings the stack up and runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Endpoints and local defaults; the environment and an untracked .env.local override them.
include .env
-include .env.local
export

STACK ?= auto
CARGO ?= cargo

.PHONY: help toolchain build lint fmt test test-rust test-compose-config test-deploy-config demo bench \
        infrastructure-up infrastructure-down infrastructure-status infrastructure-clean infrastructure-logs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

toolchain: ## install the system packages the build needs (cmake, libcurl for librdkafka)
	@scripts/ensure-build-deps.sh

build: toolchain ## build every crate, example, test and bench
	$(CARGO) build --workspace --all-targets

fmt: ## format the code
	$(CARGO) fmt --all

lint: toolchain ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

infrastructure-up: ## start the stack (Compose when a Docker engine answers, else local; STACK=local|compose forces one)
	@docker/stack.sh up

infrastructure-down: ## stop what infrastructure-up started (data is kept)
	@docker/stack.sh down

infrastructure-status: ## show each component, its endpoint and health
	@docker/stack.sh status

infrastructure-clean: ## stop and remove data, replication slots, publications and connectors
	@docker/stack.sh clean

infrastructure-logs: ## tail the logs of every component
	@docker/stack.sh logs

test-compose-config: ## validate docker/docker-compose.yml (works without a Docker engine)
	@scripts/validate-compose.sh

# `cargo test --workspace` runs unit, integration, end-to-end and doc tests and builds the
# examples (`--all-targets` would skip the doctests and run the harness-less benchmarks);
# `--all-features` includes the Vault tests (feature `vault`).
test-rust: toolchain ## run every Rust test (needs the stack up)
	$(CARGO) test --workspace --all-features --no-fail-fast

test-deploy-config: ## validate deploy/kubernetes and check-config its sync.toml (needs target/debug/sync-service)
	@scripts/validate-kubernetes.sh

test: toolchain infrastructure-up test-compose-config test-rust test-deploy-config lint ## install, start the stack, run every test, lint

demo: toolchain infrastructure-up ## order -> stock -> invoice -> payment -> dashboard across three services (debug build, shared with make test)
	$(CARGO) run -p cqrs-examples --bin demo

bench: toolchain infrastructure-up ## run the benchmark harnesses (figures go to BENCHMARKS.md by hand)
	$(CARGO) bench --workspace
