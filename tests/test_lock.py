"""The lock (requirements/*.txt) against pyproject.toml and against what is installed: a
bound edited without `make lock`, a lock edited by hand, or an environment that did not
come from the lock fails here, with the package named."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import run_cli
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def pins(name: str) -> dict[str, Version]:
    """A lock's pins that apply to this Python and platform, by canonical name."""
    found: dict[str, Version] = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        match = PIN.match(line)
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            found[canonicalize_name(match[1])] = Version(match[2])
    return found


def hashed_entries(name: str) -> list[tuple[str, int]]:
    """Each entry of a lock with the number of ``--hash`` lines that follow it."""
    entries: list[tuple[str, int]] = []
    for line in (REQUIREMENTS / name).read_text().splitlines():
        match = PIN.match(line)
        if match:
            entries.append((match[1], 0))
        elif line.strip().startswith("--hash=sha256:") and entries:
            entries[-1] = (entries[-1][0], entries[-1][1] + 1)
    return entries


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


LOCKS = ["runtime.txt", "build.txt", "test.txt", "test-data.txt", "bench.txt", "oldest.txt",
         "tools.txt"]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_with_hashes(lock):
    entries = hashed_entries(lock)
    assert entries, lock
    assert [name for name, hashes in entries if hashes == 0] == []


@pytest.mark.parametrize(("lock", "extras"), [("runtime.txt", ()), ("test.txt", ("dev",)),
                                              ("bench.txt", ("dev", "bench"))])
def test_the_lock_satisfies_every_bound_of_pyproject(lock, extras):
    locked = pins(lock)
    for requirement in declared(*extras):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{lock} has {name} {locked[name]}, outside {requirement}: "
            "run make lock")


def test_the_oldest_lock_holds_each_dependency_at_its_lower_bound():
    locked = pins("oldest.txt")
    for requirement in declared("dev"):
        lower = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
        name = canonicalize_name(requirement.name)
        assert lower, f"{requirement} declares no lower bound"
        assert locked[name] == Version(lower[0]), (
            f"requirements/oldest.txt has {name} {locked[name]}, not its lower bound "
            f"{lower[0]}: run make lock")


@pytest.mark.parametrize("lock", ["runtime.txt", "build.txt", "bench.txt"])
def test_the_other_locks_agree_with_the_test_lock(lock):
    test = pins("test.txt")
    differ = {name: (version, test[name]) for name, version in pins(lock).items()
              if name in test and test[name] != version}
    assert differ == {}


def test_the_installed_environment_is_the_locked_one():
    """The environment `make install` made (its stamp is in it) holds the test lock's
    versions; other environments (`make test-latest`, `make test-oldest`) are not meant to."""
    if not (Path(sys.prefix) / ".installed-stamp").exists():
        pytest.skip("not an environment `make install` made")
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version)
                 for d in importlib.metadata.distributions()}
    locked = pins("test.txt")
    differ = {name: (str(version), str(installed.get(name))) for name, version in locked.items()
              if installed.get(name) != version}
    assert differ == {}


def test_show_versions_names_every_dependency_with_its_installed_version():
    result = run_cli("--show-versions")
    assert result.exit_code == 0, result.output
    table = dict(line.split(None, 1) for line in result.output.splitlines())
    assert table["python"] == ".".join(map(str, sys.version_info[:3]))
    import rasterio

    assert table["gdal"] == rasterio.__gdal_version__
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert table[name] == importlib.metadata.version(requirement.name)
