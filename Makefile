# geoseg: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DATA ?= demo-data
DEMO_OUT ?= demo-output

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: this pair is on the local disk and imports beside each other.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	# Test data only: a real Sentinel-2 subset inside this wheel (its code, and so its
	# numba/datashader dependencies, is not needed).
	$(BIN)/pip install --quiet --no-deps 'xarray-spatial>=0.4'
	# Test data only: real ONNX cloud/shadow U-Nets (ukis-csmask, a peer whose own
	# tiling the tests compare against; its runtime dependencies are geoseg's already).
	$(BIN)/pip install --quiet --no-deps 'ukis-csmask==1.0.0'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/geoseg sample-data $(DEMO_DATA) --size 2048 --seed 7 --overwrite
	$(BIN)/geoseg run $(DEMO_DATA)/scene_7.tif -o $(DEMO_OUT) --probabilities --quicklook \
		--min-area 100 --overwrite --no-progress
	@echo "Outputs are in $(DEMO_OUT)/ (open scene_7.mask.tif and scene_7.gpkg in QGIS: both come styled)."

test: install
	$(BIN)/python -m pytest

# TorchGeo (a peer) and py-spy come only with the benchmarks.
$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check geoseg tests workflows benchmarks notebooks
	$(BIN)/mypy

clean:
	rm -rf $(DEMO_DATA) $(DEMO_OUT) .pytest_cache
