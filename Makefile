# The two quick-start commands: `make demo` (main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch (on disk on the project's machines); GPU users bring CUDA torch via environment.yml.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.gdslab-installed

.PHONY: demo test test-browser lab mutation clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The headline comparison at DEMO_SIZE (the checkpoint is written once, then reused).
DEMO_SIZE ?= 2GiB

demo: $(STAMP)
	$(BIN)/gdslab demo --size $(DEMO_SIZE)

# One pytest run: the unit tests and every notebook (nbval, outputs not compared) at the
# test size. Exit 5 ("no tests collected") is not a failure.
NOTEBOOK_TEST := GDSLAB_LAB_SIZE=32MiB
NBVAL_FLAGS   := --nbval-lax --nbval-current-env --nbval-cell-timeout=300

test: $(STAMP)
	$(NOTEBOOK_TEST) $(BIN)/python -m pytest -q $(NBVAL_FLAGS) tests $(wildcard notebooks); \
	status=$$?; if [ $$status -eq 5 ]; then status=0; fi; exit $$status

# Every notebook in real JupyterLab in headless Debian Chromium (Playwright's own browser
# download does not work here); screenshots land in results/screenshots/.
test-browser: $(STAMP)
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q playwright
	$(NOTEBOOK_TEST) $(BIN)/python tests_browser/run_browser_check.py

# JupyterLab on notebooks/; as root (containers, workshop images) it needs --allow-root. It prints its URL.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
LAB_ARGS  ?=

lab: $(STAMP)
	@echo "Starting JupyterLab on notebooks/ (open the http://127.0.0.1:... URL it prints)"
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG) $(LAB_ARGS)

# Mutation testing of the core with mutmut 3 ([tool.mutmut] in pyproject.toml: the modules
# mutated; [tool.gdslab.mutation_tests]: each module's own unit tests, of which a mutant runs
# those that reach its function, fastest first).
# MUTANTS narrows the run (e.g. MUTANTS='gdslab.plan.*'); results accumulate in mutants/
# and the per-module table is printed at the end (docs/results/mutation.md keeps it).
# Before a measuring run, `rm -rf mutants`: mutmut keeps old results when only tests change.
MUTANTS       ?=
MUTATION_JOBS ?= 2

mutation: $(STAMP)
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[test,mutation]'
	rm -f mutants/mutmut-stats-failures.txt
	nice -n 10 $(BIN)/python benchmarks/mutmut_run.py run --max-children $(MUTATION_JOBS) $(MUTANTS) \
		|| { cat mutants/mutmut-stats-failures.txt 2>/dev/null; exit 1; }
	$(BIN)/python benchmarks/mutation_table.py --names

clean:
	rm -rf $(VENV) results checkpoints
