"""The exception hierarchy and how its messages name options: as parameters in Python,
as flags on the command line, never touching a file's name."""

import pytest
from conftest import assert_one_line_error, invoke

from geoseg.errors import (
    ClusterError,
    DeviceError,
    EnvError,
    GeoSegError,
    InputError,
    OutputExistsError,
    RasterReadError,
    option_text,
)


@pytest.mark.parametrize(("message", "python", "cli"), [
    ("choose them with ${bands}", "choose them with bands", "choose them with --bands"),
    ("use ${allow_no_crs=True}", "use allow_no_crs=True", "use --allow-no-crs"),
    ("${device=cuda} asked for", "device=cuda asked for", "--device cuda asked for"),
    ("${min_area} and ${simplify} must", "min_area and simplify must",
     "--min-area and --simplify must"),
    ("no option here {braces} $dollar", "no option here {braces} $dollar",
     "no option here {braces} $dollar"),
])
def test_options_are_named_as_each_speaker_says_them(message, python, cli):
    assert option_text(message, "python") == python
    assert option_text(message, "cli") == cli
    error = InputError(message, "scene.tif")
    assert str(error) == error.text() == f"scene.tif: {python}"
    assert error.text("cli") == f"scene.tif: {cli}"


def test_a_file_name_is_never_rewritten(tmp_path):
    odd = tmp_path / "tile_${bands}.tif"
    error = RasterReadError("no such file", odd)
    assert error.text("cli") == error.text("python") == f"{odd}: no such file"
    assert_one_line_error(invoke("predict", odd, "-o", tmp_path / "m.tif"), "no such file",
                          named=odd)


def test_whose_problem_it_is_shows_in_the_class():
    assert issubclass(InputError, ValueError) and issubclass(RasterReadError, OSError)
    assert issubclass(OutputExistsError, FileExistsError)
    for environment in (ClusterError, DeviceError):
        assert issubclass(environment, EnvError) and issubclass(environment, RuntimeError)
        assert not issubclass(environment, InputError)
    assert all(issubclass(c, GeoSegError) for c in (InputError, EnvError, OutputExistsError))


def test_an_error_from_a_library_error_travels_from_a_dask_worker_whole():
    """Dask pickles a worker's error with tblib, context included: a rasterio error behind
    ``raise … from None`` must not turn it into a bare Exception on the client."""
    from distributed.protocol import pickle
    from rasterio._err import CPLE_AppDefinedError

    from geoseg.errors import RasterReadError

    try:
        try:
            raise CPLE_AppDefinedError(1, 1, "IReadBlock failed")
        except CPLE_AppDefinedError:
            raise RasterReadError("cannot be read", "s3://bucket/scene.tif") from None
    except RasterReadError as exc:
        error = exc
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is RasterReadError
    assert (back.message, back.path) == ("cannot be read", "s3://bucket/scene.tif")
    try:  # an unsuppressed context is still there for a traceback
        try:
            raise KeyError("inner")
        except KeyError:
            raise RasterReadError("cannot be read")  # noqa: B904
    except RasterReadError as exc:
        assert isinstance(exc.__context__, KeyError)
