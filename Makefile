# geoseg: `make demo` and `make test` set everything up on a fresh machine, from the lock.
#
# requirements/*.txt are the lock: every package pinned, each file checked against its
# SHA-256 (`pip --require-hashes`), for Python 3.11 and later on any platform (one universal
# resolution, markers where versions differ). `make lock` writes them from pyproject.toml and
# requirements/*.in; nothing else resolves versions, so a clean clone installs the same
# program today and next year. `make test-latest` and `make test-oldest` try the bounds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCKS := requirements/test.txt requirements/test-data.txt
DEMO_DATA ?= demo-data
DEMO_OUT ?= demo-output
# Where `make wheelhouse` gathers geoseg and every locked wheel, for machines with no network.
WHEELHOUSE ?= wheelhouse
# `make test-latest` / `make test-oldest` build their own environments beside the locked one.
LATEST := .venv-latest
OLDEST := .venv-oldest
OFFLINE := .venv-offline
FAST := -m "not slow"
# What `make test-latest` runs (the whole suite; CI gives the fast one).
PYTEST_ARGS ?=

.PHONY: install demo test test-fast test-latest test-oldest wheelhouse test-offline lock lock-upgrade dynamic-world bench \
	lint clean qgis-plugin

# After an environment's own lock: the data-only wheels without their dependencies, then
# geoseg itself, editable, built by the locked setuptools without fetching a build
# environment.
define install_geoseg
	$(1)/bin/pip install --quiet --require-hashes --no-deps -r requirements/test-data.txt
	$(1)/bin/pip install --quiet --no-deps --no-build-isolation -e .
endef

# The locked environment: pip refuses a file whose hash differs from the lock's, and any
# dependency the lock lacks.
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/test.txt
	$(call install_geoseg,$(VENV))
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/geoseg sample-data $(DEMO_DATA) --size 2048 --seed 7 --overwrite
	$(BIN)/geoseg run $(DEMO_DATA)/scene_7.tif -o $(DEMO_OUT) --probabilities --quicklook \
		--min-area 100 --overwrite --no-progress
	@echo "Outputs are in $(DEMO_OUT)/ (open scene_7.mask.tif and scene_7.gpkg in QGIS: both come styled)."

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest $(FAST)

# The drift check: the newest release of everything pyproject.toml allows, resolved today
# (as `pip install geoseg` would for a user), then the whole suite. Red here and green in
# `make test` means a new release breaks geoseg: pin it out in pyproject.toml or fix geoseg,
# then `make lock`. A cap in the machine's own pip configuration still holds (this
# project's machines cap torch at the release on their disk).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager pip setuptools
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/pip install --quiet --require-hashes --no-deps -r requirements/test-data.txt
	$(LATEST)/bin/geoseg --show-versions
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# The lower bounds: every dependency pyproject.toml names at the lowest version it declares
# (requirements/oldest.txt, written by `make lock`), then the fast suite.
test-oldest:
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --require-hashes -r requirements/oldest.txt
	$(call install_geoseg,$(OLDEST))
	$(OLDEST)/bin/geoseg --show-versions
	$(OLDEST)/bin/python -m pytest $(FAST)

# Everything an install needs, for a machine (a cluster node, a worker image, QGIS's Python)
# that cannot reach an index: geoseg's wheel and every locked wheel for this platform and
# Python. For another, run it there (`make wheelhouse PYTHON=python3.12`): pip chooses a
# lock's lines by the markers of the Python that runs it.
wheelhouse: install
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip download --quiet --require-hashes --no-deps --only-binary :all: \
		-r requirements/test.txt -r requirements/test-data.txt -d $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	cp requirements/test.txt requirements/test-data.txt $(WHEELHOUSE)/
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels, $$(du -sh $(WHEELHOUSE) | cut -f1)"

# The wheelhouse installed with the network cut (a network namespace of its own, so no
# index, proxy or cache outside this folder can be reached; mapped to root inside, so any
# user whose kernel allows user namespaces may make one), then the fast suite.
test-offline: wheelhouse
	rm -rf $(OFFLINE)
	$(PYTHON) -m venv $(OFFLINE)
	env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
		PIP_NO_INDEX=1 PIP_NO_CACHE_DIR=1 unshare --net --map-root-user sh -c '\
		$(OFFLINE)/bin/pip install --quiet --no-index --find-links $(WHEELHOUSE) \
			--require-hashes -r $(WHEELHOUSE)/test.txt && \
		$(OFFLINE)/bin/pip install --quiet --no-index --find-links $(WHEELHOUSE) --no-deps \
			--require-hashes -r $(WHEELHOUSE)/test-data.txt && \
		$(OFFLINE)/bin/pip install --quiet --no-index --find-links $(WHEELHOUSE) geoseg'
	cd $(OFFLINE) && bin/python -c "import geoseg; assert '/site-packages/' in geoseg.__file__; \
		print('geoseg', geoseg.__version__, 'installed in', geoseg.__file__)"
	$(OFFLINE)/bin/pytest $(FAST) -p no:cacheprovider tests

# `make lock` rewrites every lock from pyproject.toml and requirements/*.in, keeping each
# locked version that still fits (after an edit of a bound or an .in file);
# `make lock-upgrade` moves everything to the newest versions allowed today. Review the
# diff, run `make test`, commit pyproject.toml and the locks together. uv resolves for every
# platform and Python at once from the index's metadata, without downloading wheels.
HASHED := --generate-hashes --quiet --custom-compile-command "make lock"
LOCK_FLAGS := --universal --python-version 3.11 $(HASHED)
# The oldest environment is resolved for the oldest Python and this platform only: old
# releases have no wheels for newer Pythons.
OLDEST_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(HASHED)
UV := .venv-tools/bin/uv
lock lock-upgrade:
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet --require-hashes -r requirements/tools.txt
	$(UV) pip compile requirements/tools.in $(LOCK_FLAGS) $(UPGRADE) -o requirements/tools.txt
	$(UV) pip compile pyproject.toml requirements/test.in --extra dev $(LOCK_FLAGS) $(UPGRADE) \
		-o requirements/test.txt
	$(UV) pip compile pyproject.toml requirements/runtime.in -c requirements/test.txt \
		$(LOCK_FLAGS) -o requirements/runtime.txt
	$(UV) pip compile requirements/build.in -c requirements/test.txt $(LOCK_FLAGS) \
		-o requirements/build.txt
	$(UV) pip compile pyproject.toml requirements/bench.in --extra dev --extra bench \
		-c requirements/test.txt $(LOCK_FLAGS) $(UPGRADE) -o requirements/bench.txt
	$(UV) pip compile requirements/test-data.in --no-deps $(LOCK_FLAGS) $(UPGRADE) \
		-o requirements/test-data.txt
	$(UV) pip compile pyproject.toml requirements/oldest.in --extra dev \
		--resolution lowest-direct --upgrade $(OLDEST_FLAGS) -o requirements/oldest.txt
	$(UV) pip compile requirements/convert.in $(OLDEST_FLAGS) $(UPGRADE) -o requirements/convert.txt

lock-upgrade: UPGRADE := --upgrade

# Google's Dynamic World SavedModel → geoseg/models/dynamic-world, given a clone of
# github.com/google/dynamicworld (DW=path). TensorFlow reads it in an environment of its
# own (requirements/convert.txt), geoseg writes and checks the model in its own.
CONVERT := .venv-convert
DW ?= ../dynamicworld
dynamic-world: install
	$(PYTHON) -m venv $(CONVERT)
	$(CONVERT)/bin/pip install --quiet --require-hashes -r requirements/convert.txt
	$(CONVERT)/bin/python workflows/convert_dynamic_world.py read $(DW) $(CONVERT)/dynamic-world.npz
	$(BIN)/python workflows/convert_dynamic_world.py write $(CONVERT)/dynamic-world.npz \
		geoseg/models/dynamic-world --checkout $(DW)

# TorchGeo (a peer) and py-spy come only with the benchmarks.
$(VENV)/.bench-stamp: $(STAMP) requirements/bench.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements/bench.txt
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python -m benchmarks

# The QGIS plugin's zip, for "Install from ZIP" (plain python3: the plugin needs nothing of
# geoseg's environment).
QGIS_PLUGIN_DIST ?= dist
qgis-plugin:
	python3 qgis_plugin/build.py $(QGIS_PLUGIN_DIST)

lint: install
	$(BIN)/ruff check geoseg tests workflows benchmarks notebooks qgis_plugin
	$(BIN)/mypy
	$(BIN)/hadolint workflows/Dockerfile

clean:
	rm -rf $(DEMO_DATA) $(DEMO_OUT) .pytest_cache $(LATEST) $(OLDEST) $(OFFLINE) .venv-tools $(CONVERT) \
		$(WHEELHOUSE)
