PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two pytest workers match the two-core CI machine; override with `make test PYTEST_ARGS=...`.
PYTEST_ARGS ?= -n 2 -q

.PHONY: install test demo bench notebooks clean

# uv installs the same releases as pip, in under half the time (it fetches
# and unpacks in parallel); where uv cannot be had, pip does the install.
# Both compile the installed packages to bytecode, and gdlab's own modules
# are compiled too: every process the tests start then imports them without
# compiling them again (where PYTHONDONTWRITEBYTECODE is set, Python never
# keeps what it compiles).
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --quiet uv \
	  && $(BIN)/uv pip install --python $(BIN)/python --quiet \
	     --compile-bytecode -e ".[dev]" ) \
	|| ( $(BIN)/python -m pip install --quiet --upgrade pip \
	  && $(BIN)/python -m pip install --quiet -e ".[dev]" )
	$(BIN)/python -m compileall -q gdlab benchmarks
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/gdlab demo

bench: $(STAMP)
	$(BIN)/python -c "import sklearn, scipy" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Executes every notebook in place, at smoke size, with a Jupyter kernel of
# $(VENV): the outputs committed with the notebooks.
notebooks: $(STAMP)
	$(BIN)/python notebooks/execute.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
