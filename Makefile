# Two entry points: `make run` (the app on the bundled data) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test venv clean

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# 3Dmol.js served from the package, never from a CDN at view time (made once at set-up, gitignored)
wkviz/static/3Dmol-min.js: scripts/fetch_3dmol.py | $(VENV)/.installed
	$(PY) scripts/fetch_3dmol.py

run: venv wkviz/static/3Dmol-min.js
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: venv wkviz/static/3Dmol-min.js
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache artifacts
