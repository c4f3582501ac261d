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

.PHONY: help toolchain build lint fmt test test-rust test-compose test-testcontainers test-compose-config test-deploy-config demo bench \
        infrastructure-up infrastructure-down infrastructure-status infrastructure-clean infrastructure-logs \
        docker-engine compose-images

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

toolchain: ## install the system packages the build needs (cmake, libcurl for librdkafka)
	@scripts/ensure-build-deps.sh

build: toolchain ## build every crate, example, test and bench
	$(CARGO) build --workspace --all-targets

fmt: ## format the code
	$(CARGO) fmt --all

# Clippy downloads the dependencies of this platform only; `cargo fetch` gets those of every
# platform, which `cargo metadata` (run by cargo-shear, offline) needs on a fresh machine.
# After it, nothing here needs the network but the publish dry-run (the crates.io index):
# - unused dependencies, per crate and in [workspace.dependencies]: cargo-shear, installed
#   once at a pinned version into the tools directory (scripts/cargo-tool.sh);
# - every published crate packaged and built as crates.io would see it, each against the
#   others packaged alongside (`--workspace`, cargo 1.90+). No debug info, no incremental
#   state: the dependencies' builds are then the workspace's own ([profile.dev.package."*"]),
#   and it costs 1-3 min warm. `--allow-dirty`: a dry run of the work tree, not of a commit.
lint: toolchain ## rustfmt check, clippy with warnings as errors, unused dependencies, publish dry-run
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) fetch --quiet
	scripts/cargo-tool.sh shear --offline --deny-warnings
	CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_DEV_INCREMENTAL=false \
	  $(CARGO) publish --workspace --dry-run --allow-dirty

docker-engine: ## a Docker engine that answers (installs Debian's docker.io and starts dockerd when none does)
	@scripts/ensure-docker.sh

compose-images: docker-engine ## build (or find by input hash) the images of the offline Compose run (docker/images)
	@docker/images/build.sh

infrastructure-up: ## start the stack (Compose when an engine answers and its images can be had, else local; STACK=local|compose forces one)
	@docker/stack.sh up

infrastructure-down: ## stop what infrastructure-up started (data is kept)
	@docker/stack.sh down

infrastructure-status: ## show each component, its endpoint and health
	@docker/stack.sh status

infrastructure-clean: ## stop and remove data, replication slots, publications and connectors
	@docker/stack.sh clean

infrastructure-logs: ## tail the logs of every component
	@docker/stack.sh logs

test-compose-config: ## validate docker/docker-compose.yml and its offline override (works without a Docker engine)
	@scripts/validate-compose.sh

# `cargo test --workspace` runs unit, integration, end-to-end and doc tests and builds the
# examples (`--all-targets` would skip the doctests and run the harness-less benchmarks);
# `--all-features` includes the Vault tests (feature `vault`). It includes
# tests/tests/compose_stack.rs, the Compose stack end to end in its own project (needs a
# Docker engine: docker-engine).
test-rust: toolchain docker-engine ## run every Rust test (needs the stack up and a Docker engine)
	$(CARGO) test --workspace --all-features --no-fail-fast

# Same features as test-rust, so the two share one build.
test-compose: toolchain docker-engine ## only the Compose stack test: images, its own project, end to end, down -v
	$(CARGO) test --workspace --all-features --test compose_stack

# cqrs-testcontainers' own tests (tests/testcontainers), the quickstart in containers
# (examples/tests/quickstart_containers.rs) and the Ryuk stand-in (tools/ryuk): each test
# binary starts its stack on free ports (images: scripts/testcontainers-images.sh, through
# .cargo/config.toml) and its reaper removes it when the binary exits. Part of test-rust.
test-testcontainers: toolchain docker-engine ## only the Testcontainers tests: the crate's, the quickstart in containers, the reaper
	$(CARGO) test --workspace --all-features --test testcontainers --test quickstart_containers --test reaper

test-deploy-config: ## validate deploy/kubernetes and check-config its sync.toml (needs target/debug/sync-service)
	@scripts/validate-kubernetes.sh

test: toolchain docker-engine infrastructure-up test-compose-config test-rust test-deploy-config lint ## install, start the stacks, run every test, lint

demo: toolchain infrastructure-up ## order -> stock -> invoice -> payment -> dashboard across three services (debug build, shared with make test)
	$(CARGO) run -p cqrs-examples --bin demo

bench: toolchain infrastructure-up ## run the benchmark harnesses (figures go to BENCHMARKS.md by hand)
	@scripts/ensure-valgrind.sh
	$(CARGO) bench --workspace
