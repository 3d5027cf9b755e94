# Two entry points: `make run` (the app on the bundled data; installs requirements.txt only) and `make test`
# (the whole suite; adds requirements-test.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test venv clean

# Two stamps: the app's runtime (requirements.txt) for `make run`; the test-only references on top of it
# (requirements-test.txt: pytest, featomic, qm9pack, playwright) for `make test`.
$(VENV)/.app: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.app requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.app

# 3Dmol.js served from the package, never from a CDN at view time (made once at set-up, gitignored)
wkviz/static/3Dmol-min.js: scripts/fetch_3dmol.py | $(VENV)/.app
	$(PY) scripts/fetch_3dmol.py

run: venv wkviz/static/3Dmol-min.js
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: $(VENV)/.test wkviz/static/3Dmol-min.js
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache artifacts
