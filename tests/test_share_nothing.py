"""Dask clusters whose workers share nothing with the client but the scheduler and a
bucket (tests/conftest.py's ``share_nothing_cluster`` and moto's S3 server)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow  # a scheduler and two worker processes


def test_the_workers_share_no_folder_with_the_test(share_nothing_cluster, tmp_path):
    from distributed import Client

    (tmp_path / "here.txt").write_text("the test's own file")
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        seen = client.run(os.path.exists, str(tmp_path / "here.txt"))
        tmp = client.run(lambda: __import__("tempfile").gettempdir())
    assert sorted(tmp.values()) == sorted(str(f / "tmp") for f in share_nothing_cluster.folders)
    if share_nothing_cluster.hidden:
        assert list(seen.values()) == [False, False]
