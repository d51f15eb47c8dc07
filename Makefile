# byoserve: the verbs people type. Everything a target needs, it installs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
STAMP       := $(VENV)/.installed
TORCH_WHEELS ?= /opt/wheels
MODEL       ?= sentiment
PORT        ?= 8080
IMAGE       ?= byoserve
TAG         ?= latest
PYTEST_ARGS ?=
ENDPOINT    ?= sentiment
SOAK_SECONDS ?= 300
# `docker` when a Docker engine answers, else podman (which serves the same CLI and API).
DOCKER      ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
# podman's Docker API builds in docker format, and layers are only reused within one format.
export BUILDAH_FORMAT := docker
export TORCH_WHEELS
BUILD_FLAGS ?= $(if $(wildcard $(TORCH_WHEELS)/torch-*.whl),--volume $(TORCH_WHEELS):/wheels:ro --build-arg TORCH_FIND_LINKS=/wheels)

.PHONY: help install serve test test-quick lint docs-reference model clean containers build push deploy run-local test-compat test-peers bench bench-gpu bench-transform bench-load soak

help:
	@echo "make install     create .venv with the pinned dependencies"
	@echo "make serve       train/package the example model (MODEL=$(MODEL)) and serve it on :$(PORT)"
	@echo "make test        lint, type-check and run every test (containers included): what CI runs"
	@echo "make test-quick  lint, type-check, the docs and the unit tests (tests/unit): under 2 minutes"
	@echo "make test-peers  TorchServe's own tests and management collection against byoserve (tests/peers)"
	@echo "make lint        ruff, mypy and mkdocs build --strict (docs/, mkdocs.yml)"
	@echo "make docs-reference  write docs/reference/configuration.md from serve/config.py"
	@echo "make model       train and archive the examples into build/ (sentiment, digits, textgen)"
	@echo "make build push  build the image (DOCKER=$(DOCKER)) and push it to ECR (IMAGE, TAG)"
	@echo "make build-torchvision  the image with torchvision and TorchServe's ts package, as $(IMAGE):torchvision"
	@echo "make deploy      create or update the SageMaker endpoint ENDPOINT=$(ENDPOINT)"
	@echo "make bench       serve the benchmark models under wrk and compare with the in-process limit"
	@echo "make bench-gpu   on a machine with CUDA: served at batch 32 against the bare forward, both engines"
	@echo "make bench-transform  deploy transform --local against wrk on the same server and requests"
	@echo "make bench-load  64 and 256 connections beside TorchServe, and 10x overload (also in make bench)"
	@echo "make soak        the digits example at saturation for SOAK_SECONDS=$(SOAK_SECONDS) per engine: errors, memory growth"
	@echo "make run-local   run the image on :$(PORT) with build/$(MODEL) mounted read-only"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --find-links $(TORCH_WHEELS) -c constraints.txt torch==2.13.0 -e '.[test,examples,deploy]'
	# MMS's model-archiver installs the same `model_archiver` package as torch-model-archiver:
	# kept beside the venv, for the tests that run it (tests/integration/test_real_archivers.py).
	$(PIP) install -q --upgrade --no-deps --target $(VENV)/model-archiver-1.0.3 model-archiver==1.0.3
	touch $@

install: $(STAMP)

# The examples: trained here from data that ships in packages or in examples/, then archived.
SENTIMENT_SRC := $(wildcard examples/sentiment/*.py examples/sentiment/data/*) examples/training.py
DIGITS_SRC    := $(wildcard examples/digits/*.py) examples/training.py
# The text generator learns the project's own docs, so it follows them.
TEXTGEN_SRC   := $(wildcard examples/textgen/*.py docs/*.md) README.md examples/training.py

build/sentiment-model/model.pt: $(SENTIMENT_SRC) | $(STAMP)
	$(PY) examples/sentiment/train.py --out build/sentiment-model

build/digits-model/model.pt: $(DIGITS_SRC) | $(STAMP)
	$(PY) examples/digits/train.py --out build/digits-model

build/textgen-model/model.pt: $(TEXTGEN_SRC) | $(STAMP)
	$(PY) examples/textgen/train.py --out build/textgen-model

build/sentiment.tar.gz: build/sentiment-model/model.pt
	$(PY) -m serve archive --model-name sentiment --version 1.0 --handler text_classifier \
	  --serialized-file build/sentiment-model/model.pt --model-file build/sentiment-model/model.py \
	  --extra-files build/sentiment-model/vocab.json,build/sentiment-model/index_to_name.json,build/sentiment-model/text_tokenizer.py \
	  --archive-format tgz --export-path build -f

build/digits.tar.gz: build/digits-model/model.pt
	$(PY) -m serve archive --model-name digits --version 1.0 --handler digit \
	  --serialized-file build/digits-model/model.pt --model-file build/digits-model/model.py \
	  --extra-files build/digits-model/index_to_name.json --archive-format tgz --export-path build -f

# A toolkit module (model_fn, input_fn, predict_fn, output_fn) as the handler: its predict_fn streams.
build/textgen.tar.gz: build/textgen-model/model.pt
	$(PY) -m serve archive --model-name textgen --version 1.0 --handler build/textgen-model/inference.py \
	  --serialized-file build/textgen-model/model.pt --model-file build/textgen-model/model.py \
	  --extra-files build/textgen-model/vocab.json --archive-format tgz --export-path build -f

# build/<model>/model.tar.gz: the layout `docker run -v build/<model>:/opt/ml/model:ro` expects.
build/%/model.tar.gz: build/%.tar.gz
	mkdir -p $(@D) && cp $< $@

model: build/sentiment.tar.gz build/digits.tar.gz build/textgen.tar.gz \
  build/sentiment/model.tar.gz build/digits/model.tar.gz build/textgen/model.tar.gz

serve: build/$(MODEL).tar.gz
	$(PY) -m serve --model-dir build/$(MODEL).tar.gz --port $(PORT)

# podman, buildah, a local base image, docker-registry and wrk: what the container tests need
# on a machine with no Docker engine (see docs/container.md). Idempotent; root only.
containers:
	@if docker info >/dev/null 2>&1; then echo "containers: docker engine present"; \
	else bash container/setup-podman.sh; fi

build: $(STAMP)
	$(PY) -m deploy build --repository $(IMAGE) --tag $(TAG) --docker $(DOCKER) $(BUILD_FLAGS)

push: $(STAMP)
	$(PY) -m deploy push --repository $(IMAGE) --tag $(TAG) --docker $(DOCKER) $(if $(REGISTRY),--registry $(REGISTRY))

deploy: $(STAMP)
	$(PY) -m deploy create-endpoint $(ENDPOINT)

run-local: build/$(MODEL)/model.tar.gz
	$(DOCKER) run --rm -p $(PORT):8080 -v $(CURDIR)/build/$(MODEL):/opt/ml/model:ro $(IMAGE):$(TAG) serve

# Speed against the in-process limit (docs/benchmarks.md): table on stdout, bench/results/*.json, *.png.
# TorchServe 0.12 (in the venv, on the same torch) runs beside byoserve: its frontend needs Java.
bench: $(STAMP) java
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) bench/run.py

# On a machine with CUDA: only the GPU rows (served at batch 32 on each engine against the bare
# batched forward), in bench/results/gpu.json. PyPI's torch is the CUDA build, in a venv of its own
# (the main venv holds the CPU build; constraints pin torch to +cpu, so that line is dropped here).
GPU_VENV := .venv-gpu
$(GPU_VENV)/.installed: pyproject.toml constraints.txt
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	grep -v -i '^torch==' constraints.txt > $(GPU_VENV)/constraints.txt
	$(GPU_VENV)/bin/pip install -q -c $(GPU_VENV)/constraints.txt torch==2.13.0 -e .
	touch $@

bench-gpu: $(GPU_VENV)/.installed
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	BENCH_GPU_ONLY=1 $(GPU_VENV)/bin/python bench/run.py

# deploy transform --local against wrk on the same server and packed requests (docs/benchmarks.md).
bench-transform: build/sentiment.tar.gz
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	BENCH_ONLY=transform $(PY) bench/run.py

# More connections than the server answers at once (docs/benchmarks.md): resnet18 under 64 and digit
# under 256 beside TorchServe, and the overload row; bench/results/load.json. Part of `make bench`.
bench-load: $(STAMP) java
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	BENCH_ONLY=load $(PY) bench/run.py

# Saturation for a while on each HTTP engine: requests, errors and RSS growth; fails on any error
# or >10% growth.
soak: build/digits.tar.gz
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) bench/soak.py $(SOAK_SECONDS) gunicorn
	$(PY) bench/soak.py $(SOAK_SECONDS) granian

# The docs are built into a temporary directory: --strict fails on a broken link or anchor.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@site=$$(mktemp -d) && $(VENV)/bin/mkdocs build --strict --quiet --site-dir $$site; \
	  status=$$?; rm -rf $$site; exit $$status

# docs/reference/configuration.md is generated from ServingConfig's declarations (a unit test
# fails when it is stale).
docs-reference: $(STAMP)
	$(PY) -m docs.build_config_reference

# Lint and the unit tier only (tests/unit): no integration, container, deploy or fuzz tests.
test-quick: lint
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# The tests that use podman run first; then the compat venv and the torchvision image (minutes,
# mostly disk) are prepared in the background while the other tests run (a concurrent build would
# be taken for the container tests' leftovers), and test-compat finds both up to date.
PODMAN_TESTS := tests/container tests/deploy
test: lint containers java
	@mkdir -p build
	@status=0; $(VENV)/bin/pytest $(PODMAN_TESTS) $(PYTEST_ARGS) || status=$$?; \
	( $(MAKE) -s $(COMPAT) && $(PY) -m tests.compat.vision_image build/compat-logs ) \
	  > build/compat-prep.log 2>&1 & prep=$$!; \
	$(VENV)/bin/pytest $(addprefix --ignore=,$(PODMAN_TESTS)) $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 0 ]; then $(MAKE) soak SOAK_SECONDS=60 || status=$$?; fi; \
	if [ $$status -eq 0 ]; then $(MAKE) test-peers || status=$$?; fi; \
	if ! wait $$prep; then echo "compat preparation failed:"; tail -50 build/compat-prep.log; \
	  [ $$status -ne 0 ] || status=1; fi; \
	if [ $$status -eq 0 ]; then $(MAKE) test-compat || status=$$?; fi; \
	exit $$status

# TorchServe's own tests (pytorch/serve v0.12.0: test/pytest, its management postman collection)
# against byoserve through a `torchserve` that is `python -m serve` (tests/peers, docs/torchserve.md).
# newman from npm and orjson (which TorchServe's test_utils imports) go under build/, not the venv.
NEWMAN_VERSION := 6.2.2
ORJSON_VERSION := 3.10.18
PEERS_NEWMAN := build/newman/.installed-$(NEWMAN_VERSION)
PEERS_SITE := build/peers/site/.installed-$(ORJSON_VERSION)
$(PEERS_NEWMAN):
	npm install --prefix build/newman --no-audit --no-fund --loglevel=error newman@$(NEWMAN_VERSION)
	touch $@

$(PEERS_SITE): | $(STAMP)
	$(PIP) install -q --no-deps --upgrade --target build/peers/site orjson==$(ORJSON_VERSION)
	touch $@

test-peers: $(STAMP) $(PEERS_NEWMAN) $(PEERS_SITE)
	$(VENV)/bin/pytest tests/peers -o addopts="-ra" $(PYTEST_ARGS)

# TorchServe's torchvision-based handlers (ImageClassifier, ...) next to ours: a separate venv with
# torch 2.14.1 + torchvision 0.29.1 (a 5.5 GB CUDA build, from the machine's wheel cache).
COMPAT := .venv-compat/.installed
$(COMPAT): pyproject.toml
	test -x .venv-compat/bin/python || $(PYTHON) -m venv .venv-compat
	.venv-compat/bin/pip install -q torch==2.14.1 torchvision==0.29.1 torchserve==0.12.0 torch-model-archiver==0.12.0 captum==0.9.0
	.venv-compat/bin/pip install -q -e '.[test]'
	touch $@

# The image with torchvision (Dockerfile, VARIANT=torchvision): torch 2.14.1, torchvision 0.29.1,
# TorchServe's `ts` package and captum. pip's indexes on this machine's disk (pip.conf's
# extra-index-url file://DIR/simple: the CUDA build of torch 2.14.1 and its nvidia-* wheels) are
# mounted into the build and searched; a machine without them takes the CPU builds from
# download.pytorch.org. The compat tests build the same image themselves (tests/compat/vision_image.py).
LOCAL_INDEXES = $(patsubst file://%/simple,%,$(filter file://%/simple,$(shell $(PY) -m pip config get global.extra-index-url 2>/dev/null)))
VISION_BUILD_FLAGS = --build-arg VARIANT=torchvision $(if $(LOCAL_INDEXES),$(foreach d,$(LOCAL_INDEXES),--volume $(d):/indexes$(d):ro) --build-arg "TORCH_INDEX_URL=$(strip $(foreach d,$(LOCAL_INDEXES),file:///indexes$(d)/simple))")

.PHONY: build-torchvision java
build-torchvision: $(STAMP)
	$(PY) -m deploy build --repository $(IMAGE) --tag torchvision --docker $(DOCKER) $(VISION_BUILD_FLAGS)

# TorchServe's own frontend, which the compat tests compare with, runs on Java.
java:
	@command -v java >/dev/null || (apt-get update -q && apt-get install -y -q openjdk-17-jre-headless)

# Builds (or brings up to date) and keeps localhost/byoserve-compat:torchvision and its -deps stage:
# about 7 min the first time, under a minute after a code change (tests/compat/vision_image.py).
test-compat: $(COMPAT) containers java
	.venv-compat/bin/pytest tests/compat -o addopts="-ra" $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
