# cnngraph: `make demo` runs the whole job end to end, `make test` runs every check.
# Both set themselves up on a fresh clone: a virtual environment in .venv, the package with its
# pinned dependencies, and the Maven-built Neo4j launcher in server/target.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export CNNGRAPH_STATE_DIR ?= $(CURDIR)/.cnngraph/neo4j

JAVA_SOURCES := $(shell find server/src -name '*.java')
CODE := cnngraph tests bench

.PHONY: install launcher lint test smoke demo bench clean

$(BIN)/.installed: pyproject.toml setup.py cnngraph/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

server/target/classpath.txt: server/pom.xml $(JAVA_SOURCES)
	cd server && mvn -B -q package -DskipTests
	touch $@

launcher: server/target/classpath.txt

lint: install
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy cnngraph

test: install launcher lint
	$(BIN)/pytest -q
	bash scripts/wheel_smoke.sh

# The package as a pip user gets it: the wheel in a fresh venv, the pipeline from an empty folder.
smoke: install
	bash scripts/wheel_smoke.sh

demo: install launcher
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: install launcher
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

clean:
	rm -rf $(VENV) server/target .cnngraph out build dist .mypy_cache .ruff_cache .pytest_cache
