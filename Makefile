# The two commands a newcomer needs: `make demo` runs the hub, `make test` runs the tests.
# Both run `make setup` first, which installs what is missing and takes seconds when done.
VENV ?= .venv
PY := $(VENV)/bin/python
VV := $(VENV)/bin/vitalvagt

.PHONY: setup demo test lint bench stack-up stack-down schema clean-state

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VV) demo

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check .

bench: setup
	@$(PY) -m bench

stack-up: setup
	@$(VV) stack up

stack-down:
	@$(VV) stack down

schema: setup
	@$(VV) wire schema --out docs/schema

clean-state: stack-down
	rm -rf .vv
