# One entry point for set-up, tests and the demo. Everything lives in ./.venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install bench-install test lint format-check demo clean

install: $(STAMP)

# pip is used as the venv ships it: pip >= 25 refuses espnet's ci_sdr dependency (a direct-URL extra).
$(STAMP): setup.py constraints.txt
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (Debian package)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null) \
	  || { echo "could not install espeak-ng: run 'apt-get install espeak-ng' as root" >&2; exit 1; }; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

RUFF := $(VENV)/bin/ruff

# The linter and the formatter's check first (settings in pyproject.toml), then the tests.
test: lint format-check
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(RUFF) check .

format-check: $(STAMP)
	$(RUFF) format --check .

# What the benchmarks need besides the package (Torch-Pruning for the L1 baseline), at the tested pins.
bench-install: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'

demo: $(STAMP)
	cd egs2/librispeech/asr1 && ./run.sh --demo true

clean:
	rm -rf $(VENV) *.egg-info
