"""The notebooks run from top to bottom (so they cannot rot) and are stored without outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["quickstart.ipynb", "training.ipynb"])
def test_notebook_runs_and_is_stored_clean(name, tmp_path):
    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(stored)
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    maker = _maker()
    assert stored == maker.build(maker.NOTEBOOKS[name]), "run notebooks/make_notebooks.py"
    NotebookClient(stored, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in stored.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert (tmp_path / "output").is_dir()
