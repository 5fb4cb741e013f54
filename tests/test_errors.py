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
