# The README's two commands: `make demo` (the main job) and `make test` (the CPU test suite).
# Both build .venv from scratch on a fresh machine; the stamp files make reruns instant.
# Every install goes through constraints.txt, the pinned stack the image installs too.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q -c constraints.txt

# The image (docker/Dockerfile): make image CUDA_VARIANT=cu126|cu128|cu130 [TORCH_VERSION=x.y.z] [EXTRAS=...]
VERSION       := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' constraints.txt)
CUDA_VARIANT  ?= cu128
EXTRAS        ?= radio,graph,vision,serve,lab
IMAGE         ?= cudalab:$(VERSION)-torch$(word 1,$(subst ., ,$(TORCH_VERSION))).$(word 2,$(subst ., ,$(TORCH_VERSION)))-$(CUDA_VARIANT)

.PHONY: demo test lint bench-doctor gpu-check clean constraints image image-check image-test base-image ssh-tools screenshots audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch for the machine: TORCH_VARIANT=cpu|cu126|cu128|cu130 installs the pinned release from PyTorch's
# own index (drivers: cu126 >= 560.28.03, cu128 >= 570.26, cu130 >= 580.65.06; cudalab doctor checks);
# unset, PyPI's default build (cu130 for torch 2.14). A change of variant reinstalls torch.
TORCH_VARIANT ?=
ifneq ($(filter-out cpu cu126 cu128 cu130,$(TORCH_VARIANT)),)
$(error TORCH_VARIANT must be cpu, cu126, cu128 or cu130, not '$(TORCH_VARIANT)')
endif
TORCH_STAMP   := $(VENV)/.torch-$(or $(TORCH_VARIANT),pypi)
$(TORCH_STAMP): constraints.txt | $(BIN)/python
	$(if $(TORCH_VARIANT),$(PIP) --force-reinstall --no-deps --index-url https://download.pytorch.org/whl/$(TORCH_VARIANT) \
	  torch==$(TORCH_VERSION) && $(PIP) --index-url https://download.pytorch.org/whl/$(TORCH_VARIANT) \
	  --extra-index-url https://pypi.org/simple torch==$(TORCH_VERSION),\
	  if ls $(VENV)/.torch-* 2>/dev/null | grep -qv '\.torch-pypi$$'; then \
	    $(PIP) --force-reinstall --no-deps torch==$(TORCH_VERSION); fi)
	rm -f $(VENV)/.torch-*
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt $(TORCH_STAMP) | $(BIN)/python
	$(PIP) -e '.[radio]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(TORCH_STAMP) | $(BIN)/python
	$(PIP) -e '.[radio,graph,vision,serve,lab,dev]'
	touch $@ $(VENV)/.installed

# The lab's SSH tests need a real sshd and ssh client; installed here when absent and possible (root
# with apt-get, as on CI). Elsewhere the tests that need them say so and skip.
ssh-tools:
	@if command -v ssh >/dev/null && { command -v sshd >/dev/null || test -x /usr/sbin/sshd; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing openssh-server and openssh-client for the lab's SSH tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq openssh-server openssh-client >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && apt-get install -y -qq openssh-server openssh-client >/dev/null; } || \
	  echo "note: apt-get could not install openssh-server: the lab's SSH tests will skip"; \
	else echo "note: no sshd here and no root apt-get to install it: the lab's SSH tests will skip"; fi

# The main job: simulate a 13 s, 512-channel observation with bursts, a pulsar and RFI, search it
# (GPU when usable), and write demo-out/search/report.html. About 30 s on a 2-core CPU.
demo: $(VENV)/.installed
	$(BIN)/cudalab doctor
	$(BIN)/cudalab radio demo --out demo-out

test: $(VENV)/.installed-dev ssh-tools
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts
	$(BIN)/mypy

bench-doctor: $(VENV)/.installed
	$(BIN)/python benchmarks/doctor_latency.py

# The GPU acceptance run on a machine with a usable GPU: every GPU test and benchmark within a budget
# (BUDGET seconds, 480 by default); results in OUT/gpu_check.{json,md} and OUT/logs/.
OUT    ?= gpu-check
BUDGET ?= 480
gpu-check: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/gpu_check.py --out $(OUT) --budget-s $(BUDGET)

# The report screenshots in docs/img/ (docs/radio.md): three searches rendered by headless Chromium.
screenshots: $(VENV)/.installed
	$(BIN)/python scripts/report_screenshots.py

# Rewrite constraints.txt from .venv (after changing a dependency): every package pinned except the
# CUDA runtime wheels, which follow the torch build (the image's CUDA_VARIANT) rather than the venv.
constraints: | $(BIN)/python
	{ echo "# The pinned stack shared by the venv (Makefile) and the image (docker/Dockerfile)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#' \
	  | grep -v -P '^(nvidia-(?!ml-py)|triton==|cuda-(bindings|pathfinder|toolkit)==)'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

# Known vulnerabilities in the pinned stack: the table docs/audit.md, each finding's decision in
# docs/audit-actions.toml (an untriaged finding fails). pip-audit asks PyPI; it lives in its own venv so
# that its dependencies stay out of the pinned stack. Where PyPI's JSON API is not reachable,
# ADVISORY_DB=<a checkout of github.com/pypa/advisory-database> audits offline against that snapshot.
PIP_AUDIT_VERSION ?= 2.10.1
ADVISORY_DB       ?=
AUDIT_VENV        := .audit-venv
$(AUDIT_VENV)/bin/pip-audit:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install -q pip-audit==$(PIP_AUDIT_VERSION)

audit: $(VENV)/.installed-dev $(if $(ADVISORY_DB),,$(AUDIT_VENV)/bin/pip-audit)
	$(BIN)/python -m cudalab.env.audit --constraints constraints.txt --actions docs/audit-actions.toml \
	  --out docs/audit.md $(if $(ADVISORY_DB),--advisory-db $(ADVISORY_DB),--pip-audit $(AUDIT_VENV)/bin/pip-audit)

# Without an engine: would the image's Python (Debian bookworm's 3.11.2, manylinux x86_64) find a wheel for every pin?
image-check: | $(BIN)/python
	grep -v -E '^(#|torch==)' constraints.txt > .image-reqs.tmp
	$(BIN)/python -m pip install -q --dry-run --no-deps --ignore-installed --only-binary=:all: \
	  --python-version 3.11.2 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
	  --target .image-check.tmp -r .image-reqs.tmp; rc=$$?; rm -rf .image-reqs.tmp .image-check.tmp; exit $$rc

# The container engine: Docker when its daemon answers, else Podman (as root on hosts whose cgroups
# crun refuses: runc and cgroupfs). ENGINE=docker|podman overrides.
ENGINE      ?= $(shell if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; \
                 elif command -v podman >/dev/null 2>&1; then echo podman; else echo docker; fi)
ENGINE_ARGS ?= $(if $(filter podman,$(ENGINE)),--runtime runc --cgroup-manager cgroupfs,)
# Podman writes OCI images by default, which have no SHELL or HEALTHCHECK: ask for Docker's format.
BUILD_ARGS  ?= $(if $(filter podman,$(ENGINE)),--format docker,)
# The Dockerfile's base, made here from Debian's packages when no registry is reachable.
BASE_IMAGE  ?= docker.io/library/debian:bookworm-slim
DEBIAN_MIRROR ?= http://deb.debian.org/debian
# torch's index: PyTorch's for the variant; TORCH_INDEX=https://pypi.org/simple takes PyPI's (cu130).
TORCH_INDEX ?= https://download.pytorch.org/whl/$(CUDA_VARIANT)
# A TLS-intercepting proxy's CA bundle, given to the build as a secret (never in a layer).
CA_BUNDLE   ?=
comma := ,

image:
	$(ENGINE) $(ENGINE_ARGS) build $(BUILD_ARGS) --network host -f docker/Dockerfile -t $(IMAGE) \
	  --build-arg CUDALAB_VERSION=$(VERSION) --build-arg TORCH_VERSION=$(TORCH_VERSION) \
	  --build-arg CUDA_VARIANT=$(CUDA_VARIANT) --build-arg TORCH_INDEX=$(TORCH_INDEX) \
	  --build-arg EXTRAS=$(EXTRAS) $(if $(CA_BUNDLE),--secret id=ca_bundle$(comma)src=$(CA_BUNDLE),) .
	@echo "built $(IMAGE)"

# debian:bookworm-slim from Debian's packages (mmdebstrap, about 2 minutes), under the name users pull.
base-image:
	@command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap (apt-get install mmdebstrap)"; exit 2; }
	mmdebstrap --quiet --variant=minbase --include=ca-certificates \
	  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	  --dpkgopt='path-exclude=/usr/share/locale/*' bookworm - $(DEBIAN_MIRROR) \
	  | $(ENGINE) $(ENGINE_ARGS) import --change 'CMD ["bash"]' - $(BASE_IMAGE)

# Build the image here and run the image tests against a container of it (tests/lab/test_image.py,
# marker `image`): make image-test [CUDA_VARIANT=cu130 TORCH_INDEX=https://pypi.org/simple CA_BUNDLE=...]
image-test: $(VENV)/.installed-dev
	@$(ENGINE) $(ENGINE_ARGS) image exists $(BASE_IMAGE) 2>/dev/null || $(ENGINE) $(ENGINE_ARGS) image inspect $(BASE_IMAGE) >/dev/null 2>&1 \
	  || $(MAKE) base-image
	/usr/bin/time -f "image built in %e s" $(MAKE) image
	@$(ENGINE) $(ENGINE_ARGS) image inspect $(IMAGE) --format 'image size {{.Size}} bytes'
	CUDALAB_TEST_IMAGE=$(IMAGE) CUDALAB_TEST_ENGINE="$(ENGINE) $(ENGINE_ARGS)" \
	  $(BIN)/python -m pytest -m image -p no:cacheprovider tests/lab/test_image.py

clean:
	rm -rf $(VENV) $(AUDIT_VENV) .pytest_cache .ruff_cache .mypy_cache
