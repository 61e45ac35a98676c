# The two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: run test lint venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) manage.py up --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

# pytest exits 5 when it collected nothing: our suite is never empty, so say so loudly.
test: lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

clean:
	rm -rf $(VENV) var
