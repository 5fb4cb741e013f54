"""Atomic outputs: temp files beside the target, replaced whole or not at all."""

import pytest

from geoseg import atomic
from geoseg.errors import OutputExistsError


def test_atomic_path_never_leaves_partial_files(tmp_path):
    target = tmp_path / "out.tif"
    target.write_text("precious")
    with pytest.raises(OutputExistsError):
        atomic.check_output(target, overwrite=False)
    with pytest.raises(RuntimeError), atomic.atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    with atomic.atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os

    target = tmp_path / "shared.txt"
    old = os.umask(0o022)
    try:
        with atomic.atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("for everyone to read")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644


def test_replacing_a_raster_drops_its_stale_sidecars(tmp_path):
    target = tmp_path / "mask.tif"
    target.write_text("old")
    aux = tmp_path / "mask.tif.aux.xml"
    aux.write_text("<PAMDataset>stale statistics of the old file</PAMDataset>")
    with atomic.atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and not aux.exists()
