"""The bad-input matrix: every row through the real CLI and through the Python API.

A row that cannot give a valid result must fail with exit code 1 and one line
``Error: <file>: <problem>`` (no traceback), leave no output file or new folder behind and
leave the outputs already there untouched, even with --overwrite. A row whose result is
valid (an all-nodata scene, NaN pixels, a scene smaller than a tile) must give that result,
with a one-line warning where something is worth knowing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import (
    TRANSFORM,
    assert_one_line_error,
    file_size_limit,
    geoseg_done,
    invoke,
    own_lines,
    write_raster,
)
from shapely.geometry import box

import geoseg
from geoseg.errors import (
    GeoSegError,
    GeoSegWarning,
    InputError,
    OutputError,
    OutputExistsError,
    RasterReadError,
    option_text,
)

EARLIER = {"mask.tif": b"an earlier good mask", "mask.qml": b"<qgis/>"}


def image(bands: int = 4, height: int = 64, width: int = 80, dtype=np.uint16, seed: int = 0):
    return np.random.default_rng(seed).integers(1, 4000, (bands, height, width)).astype(dtype)


def truncated(d: Path) -> list[Path]:
    path = write_raster(d / "cut.tif", image(height=256, width=256))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return [path]


def mosaic(d: Path, **second) -> list[Path]:
    a = write_raster(d / "west.tif", image()[:, :, :40])
    east = {"data": image()[:, :, 40:], "transform": TRANSFORM @ Affine.translation(40, 0), **second}
    return [a, write_raster(d / "east.tif", east.pop("data"), **east)]


@dataclass
class Row:
    """``make`` writes the input(s) into a folder; ``named`` is the file the error names
    (an index into the inputs, or None for an option error); ``options`` go to both the
    API and the CLI; ``words`` name options as ``${name}``, said as each of them says it
    (``--allow-no-crs`` on the command line, ``allow_no_crs=True`` in Python)."""

    id: str
    make: Callable[[Path], list[Path]]
    error: type[GeoSegError]
    words: str
    named: int | None = 0
    options: dict = field(default_factory=dict)


ERRORS = [
    Row("missing file", lambda d: [d / "missing.tif"], RasterReadError, "no such file"),
    Row("directory instead of a file", lambda d: [d], RasterReadError,
        "is a directory without GeoTIFF tiles"),
    Row("text file named .tif", lambda d: [(d / "notes.tif", (d / "notes.tif").write_text("hi"))[0]],
        RasterReadError, "not a raster GDAL can read"),
    Row("truncated GeoTIFF", truncated, RasterReadError, "is truncated or corrupt"),
    Row("zero-byte file", lambda d: [(d / "zero.tif", (d / "zero.tif").write_bytes(b""))[0]],
        RasterReadError, "is an empty file (0 bytes)"),
    Row("complex64", lambda d: [write_raster(d / "sar.tif", image(dtype=np.complex64))],
        InputError, "data type complex64 is not supported"),
    Row("1 band for a 4-band model", lambda d: [write_raster(d / "gray.tif", image(bands=1))],
        InputError, "has 1 band but the model needs 4 (blue, green, red, nir); choose them with "
                    "${bands}"),
    Row("--bands naming a band that is not there",
        lambda d: [write_raster(d / "pan.tif", image(bands=1))], InputError,
        "band 2 does not exist (the raster has 1 bands)", options={"bands": (1, 2, 1, 1)}),
    Row("no CRS", lambda d: [write_raster(d / "plain.tif", image(), crs=None)], InputError,
        "has no CRS (use ${allow_no_crs=True}"),
    Row("rotated geotransform",
        lambda d: [write_raster(d / "rot.tif", image(), transform=TRANSFORM @ Affine.rotation(10))],
        InputError, "rotated or sheared geotransform is not supported"),
    Row("sheared geotransform",
        lambda d: [write_raster(d / "shear.tif", image(), transform=TRANSFORM @ Affine.shear(5, 0))],
        InputError, "rotated or sheared geotransform is not supported"),
    Row("huge tile size", lambda d: [write_raster(d / "ok.tif", image())], InputError,
        "tile size 65536 is too large (at most 8192 pixels)", named=None,
        options={"tile_size": 65536}),
    Row("mosaic with mismatched band counts",
        lambda d: mosaic(d, data=image(bands=3)[:, :, 40:]), InputError,
        "mosaic tile band count 3 differs from 4 of", named=1),
    Row("mosaic with mismatched CRS", lambda d: mosaic(d, crs="EPSG:32632"), InputError,
        "mosaic tile CRS EPSG:32632 differs from EPSG:32633 of", named=1),
    Row("mosaic with mismatched data types",
        lambda d: mosaic(d, data=image(dtype=np.float32)[:, :, 40:]), InputError,
        "mosaic tile data type float32 differs from uint16 of", named=1),
    Row("mosaic off the pixel grid",
        lambda d: mosaic(d, transform=TRANSFORM @ Affine.translation(40.5, 0)), InputError,
        "mosaic tile is not on the pixel grid of", named=1),
]


def cli_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return args


def earlier_outputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in EARLIER.items():
        (folder / name).write_bytes(data)
    return folder


def assert_untouched(folder: Path) -> None:
    """Only the earlier outputs are there (no temp or partial file), byte for byte."""
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == EARLIER


@pytest.mark.parametrize("row", ERRORS, ids=[r.id for r in ERRORS])
@pytest.mark.parametrize("via", ["cli", "api"])
def test_bad_input_is_one_clear_error_and_leaves_outputs_as_they_were(row, via, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sources = row.make(inputs)
    named = None if row.named is None else sources[row.named]
    out = earlier_outputs(tmp_path / "out")
    words = option_text(row.words, "cli" if via == "cli" else "python")
    if via == "cli":
        result = invoke("predict", *sources, "-o", out / "mask.tif", "--overwrite",
                        "--probabilities", out / "prob.tif", *cli_args(row.options))
        assert_one_line_error(result, words, named=named)
    else:
        with pytest.raises(row.error) as info:
            geoseg.predict([str(s) for s in sources], out / "mask.tif", overwrite=True,
                           probabilities_path=out / "prob.tif", **row.options)
        assert words in str(info.value)
        assert named is None or str(info.value).startswith(f"{named}: ")
    assert_untouched(out)


def nan_image(d: Path) -> list[Path]:
    data = image(dtype=np.float32)
    data[0, 3, 4], data[1, 10, 20], data[3, 60, 79] = np.nan, np.inf, -np.inf
    return [write_raster(d / "float.tif", data)]


def check_nan(mask: np.ndarray) -> bool:
    bad = np.zeros(mask.shape, bool)
    bad[3, 4] = bad[10, 20] = bad[60, 79] = True
    return bool((mask[bad] == 255).all() and (mask[~bad] < 6).all())


VALID = [
    # id, make, options, check of the mask array, warning
    ("1 band for a 4-band model, --bands fixes it",
     lambda d: [write_raster(d / "pan.tif", image(bands=1))], {"bands": (1, 1, 1, 1)},
     lambda m: (m < 6).all(), None),
    ("no CRS, allowed", lambda d: [write_raster(d / "plain.tif", image(), crs=None)],
     {"allow_no_crs": True}, lambda m: (m < 6).all(), None),
    ("all nodata", lambda d: [write_raster(d / "empty.tif", np.zeros((4, 64, 80), np.uint16),
                                           nodata=0)],
     {}, lambda m: (m == 255).all(), "has no valid pixels (all nodata): the mask is all nodata"),
    ("NaN and inf in float bands", nan_image, {}, check_nan, None),
    ("image smaller than one tile",
     lambda d: [write_raster(d / "tiny.tif", image(height=5, width=7), tiled=False)], {},
     lambda m: m.shape == (5, 7) and (m < 6).all(), None),
    ("tile larger than the image", lambda d: [write_raster(d / "ok.tif", image())],
     {"tile_size": 4096}, lambda m: (m < 6).all(), None),
]


@pytest.mark.parametrize(("make", "options", "check", "warning"), [v[1:] for v in VALID],
                         ids=[v[0] for v in VALID])
@pytest.mark.parametrize("via", ["cli", "api"])
def test_valid_odd_input_gives_a_valid_mask(make, options, check, warning, via, tmp_path):
    options = {"model": "default", **options}  # named: these scenes are not geoseg's own
    inputs = tmp_path / "in"
    inputs.mkdir()
    [src] = make(inputs)
    dst = tmp_path / "out" / "mask.tif"
    if via == "cli":
        result = invoke("predict", src, "-o", dst, *cli_args(options))
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
        assert warnings == ([f"Warning: {src}: {warning}"] if warning else [])
    else:
        expected = pytest.warns(GeoSegWarning, match=re.escape(warning or ""))
        with expected if warning else contextlib.nullcontext():
            geoseg.predict(src, dst, **options)
    with rasterio.open(dst) as got, rasterio.open(src) as want:
        assert (got.crs, got.transform, got.shape) == (want.crs, want.transform, want.shape)
        assert got.nodata == 255
        assert check(got.read(1))


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    """A good mask, an all-nodata mask, and one that is an image instead."""
    folder = tmp_path_factory.mktemp("masks")
    write_raster(folder / "image.tif", image())
    geoseg.predict(folder / "image.tif", folder / "good.tif")
    write_raster(folder / "empty.tif", np.zeros((4, 32, 32), np.uint16), nodata=0)
    with pytest.warns(GeoSegWarning):
        geoseg.predict(folder / "empty.tif", folder / "nodata.tif")
    return folder


VECTOR_ERRORS = [
    ("missing mask", lambda m, d: d / "missing.tif", RasterReadError, "no such file"),
    ("text file named .tif", lambda m, d: (d / "x.tif", (d / "x.tif").write_text("x"))[0],
     RasterReadError, "not a raster GDAL can read"),
    ("an image, not a mask", lambda m, d: m / "image.tif", InputError,
     "has 4 bands; a class mask has one"),
    ("truncated mask", lambda m, d: truncated(d)[0], RasterReadError, "truncated or corrupt"),
]


@pytest.mark.parametrize(("make", "error", "words"), [v[1:] for v in VECTOR_ERRORS],
                         ids=[v[0] for v in VECTOR_ERRORS])
@pytest.mark.parametrize("via", ["cli", "api"])
def test_a_bad_mask_is_one_clear_error_and_writes_no_geopackage(make, error, words, via, masks,
                                                                  tmp_path):
    src = make(masks, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "polygons.gpkg").write_bytes(b"an earlier good layer")
    if via == "cli":
        result = invoke("vectorize", src, "-o", out / "polygons.gpkg", "--overwrite")
        assert_one_line_error(result, words, named=src)
    else:
        with pytest.raises(error, match=words) as info:
            geoseg.vectorize(src, out / "polygons.gpkg", overwrite=True)
        assert str(info.value).startswith(f"{src}: ")
    assert [p.name for p in out.iterdir()] == ["polygons.gpkg"]
    assert (out / "polygons.gpkg").read_bytes() == b"an earlier good layer"


@pytest.mark.parametrize("via", ["cli", "api"])
def test_an_all_nodata_mask_gives_an_empty_styled_layer_and_a_warning(masks, via, tmp_path):
    dst = tmp_path / "empty.gpkg"
    if via == "cli":
        result = invoke("vectorize", masks / "nodata.tif", "-o", dst)
        assert result.exit_code == 0, result.output
        assert f"Warning: {masks / 'nodata.tif'}: has no valid pixels (all nodata): the layer " \
               f"is empty" in result.output.splitlines()
    else:
        with pytest.warns(GeoSegWarning, match="the layer is empty"):
            geoseg.vectorize(masks / "nodata.tif", dst)
    layer = gpd.read_file(dst, layer="empty")
    assert len(layer) == 0 and layer.crs == "EPSG:32633"
    assert {"class_id", "class_name", "area_m2"} <= set(layer.columns)


@pytest.fixture
def far_labels(tmp_path) -> dict[str, Path]:
    """Labels 20 km east of the test image, as a raster and as polygons."""
    east = TRANSFORM @ Affine.translation(10_000, 0)
    raster_labels = write_raster(tmp_path / "far.tif", np.ones((64, 80), np.uint8), transform=east)
    x, y = east * (0, 0)
    vector_labels = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(x, y - 100, x + 100, y)],
                     crs="EPSG:32633").to_file(vector_labels)
    return {"raster": raster_labels, "vector": vector_labels}


@pytest.mark.parametrize("kind", ["raster", "vector"])
@pytest.mark.parametrize("via", ["cli", "api"])
def test_labels_that_do_not_overlap_the_image_are_refused(far_labels, masks, kind, via, tmp_path):
    labels = far_labels[kind]
    image_path = masks / "image.tif"
    report, model = tmp_path / "out" / "report.json", tmp_path / "out" / "model"
    if via == "cli":
        assert_one_line_error(invoke("evaluate", masks / "good.tif", "--labels", labels,
                                     "-o", report), "labels do not overlap the image", named=labels)
        assert_one_line_error(invoke("train", image_path, "--labels", labels, "-o", model,
                                     "--epochs", 1), "labels do not overlap the image", named=labels)
    else:
        with pytest.raises(InputError, match="do not overlap"):
            geoseg.evaluate(masks / "good.tif", labels, report=report)
        with pytest.raises(InputError, match="do not overlap"):
            geoseg.train([image_path], [labels], model, epochs=1)
    assert not (tmp_path / "out").exists()  # not even the folders


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder nobody may write to: read-only for a user; for root (who ignores modes)
    immutable (chattr +i) where the file system allows it."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                        capture_output=True).returncode:
        pytest.skip("root here cannot make a folder unwritable (no chattr +i)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_output_folder_is_one_line_before_any_work(unwritable, masks):
    image_path, good = masks / "image.tif", masks / "good.tif"
    for args in (["predict", image_path, "-o", unwritable / "mask.tif"],
                 ["predict", image_path, "-o", unwritable / "deeper" / "mask.tif"],
                 ["vectorize", good, "-o", unwritable / "polygons.gpkg"],
                 ["evaluate", good, "--labels", good, "-o", unwritable / "report.json"]):
        result = invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output.startswith(f"Error: {unwritable}") and (
            "not writable" in result.output or "cannot create" in result.output), result.output
    result = invoke("run", image_path, "-o", unwritable)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {unwritable}")
    with pytest.raises(OutputError, match="not writable"):
        geoseg.predict(image_path, unwritable / "mask.tif")
    assert list(unwritable.iterdir()) == []


def test_existing_outputs_need_overwrite_and_stay_as_they_were(masks, tmp_path):
    image_path, good = masks / "image.tif", masks / "good.tif"
    out = earlier_outputs(tmp_path / "out")
    (out / "polygons.gpkg").write_bytes(b"layer")
    (out / "report.json").write_bytes(b"{}")
    for args, named in ((["predict", image_path, "-o", out / "mask.tif"], out / "mask.tif"),
                        (["vectorize", good, "-o", out / "polygons.gpkg"], out / "polygons.gpkg"),
                        (["evaluate", good, "--labels", good, "-o", out / "report.json"],
                         out / "report.json")):
        assert_one_line_error(invoke(*args), "exists already (use --overwrite to replace it)",
                              named=named)
    with pytest.raises(OutputExistsError):
        geoseg.predict(image_path, out / "mask.tif")
    assert (out / "polygons.gpkg").read_bytes() == b"layer"
    (out / "polygons.gpkg").unlink()
    (out / "report.json").unlink()
    assert_untouched(out)


@pytest.fixture(params=["tmpfs", "file size limit"])
def small_disk(tmp_path, request):
    """``(folder, preexec)``: a folder on a 300 kB tmpfs (where root may mount one), or a
    plain folder and a ``preexec_fn`` that stops files growing past 100 kB (RLIMIT_FSIZE),
    as a full disk would."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = False
    if request.param == "tmpfs":
        mounted = os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(folder)],
            capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("no tmpfs can be mounted here (the file size limit stands in)")

    yield folder, None if mounted else file_size_limit(100_000)
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_disk_that_fills_while_writing_leaves_nothing(small_disk, tmp_path):
    """The scratch files of a 200 × 200 scene (a byte per pixel for the mask, six for the
    probabilities: 280 kB) fit on the 300 kB disk, so the checks up front pass; its COGs
    do not fit beside them. A 600 × 600 scene is refused up front."""
    folder, preexec = small_disk
    scene = write_raster(tmp_path / "scene.tif", image(height=200, width=200, seed=4))
    large = write_raster(tmp_path / "large.tif", image(height=600, width=600, seed=4))
    noise = np.random.default_rng(5).integers(0, 6, (600, 600), dtype=np.uint8)
    speckled = write_raster(tmp_path / "speckled.tif", noise, nodata=255)  # ~100 000 polygons
    (folder / "keep.txt").write_bytes(b"an earlier output")
    # (Either output of the first row may be the one that finds the disk full first.)
    rows = [(["predict", scene, "-o", folder / "mask.tif", "--probabilities",
              folder / "prob.tif", "--model", "default"], ("prob.tif", "mask.tif"),
             "could not be written ("),
            (["vectorize", speckled, "-o", folder / "speckled.gpkg"], ("speckled.gpkg",),
             "could not be written (")]
    if preexec is None:
        rows.append((["predict", large, "-o", folder / "mask.tif", "--model", "default"],
                     ("mask.tif",),
                     "could not be written (its scratch files need 360.0 kB free"))
    for args, names, words in rows:
        done = geoseg_done(*args, preexec=preexec)
        assert done.returncode == 1, done.stderr
        lines = own_lines(done.stderr)
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(tuple(f"Error: {folder / n}: {words}" for n in names)), lines
        assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert (folder / "keep.txt").read_bytes() == b"an earlier output"


def test_a_block_lost_to_a_full_disk_is_an_error_not_a_hole(small_disk, tmp_path):
    """GDAL only prints that a block's write failed (at close, on ENOSPC): geoseg's window
    writer reads every block back, so the loss is an OutputError, never a silent hole."""
    import resource
    import signal

    from geoseg import cog, sources

    folder, preexec = small_disk
    source = sources.open_source(write_raster(tmp_path / "scene.tif", image(height=512, width=512)))
    scratch = folder / "scratch.tif"
    cog.create_scratch(scratch, source.grid, count=1, dtype="uint8", nodata=255, name="mask.tif",
                       blocksize=256)
    writer = cog.WindowWriter(scratch, "mask.tif")
    blocks = np.random.default_rng(0).integers(0, 6, (4, 256, 256), dtype=np.uint8)
    with contextlib.ExitStack() as full:
        if preexec is None:  # a real small disk: fill it up
            filler = folder / "filler"
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                f.write(b"x" * 400_000)
        else:  # no mount allowed: no file of this process may grow past its size now
            limits = resource.getrlimit(resource.RLIMIT_FSIZE)
            handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (scratch.stat().st_size, limits[1]))
            full.callback(signal.signal, signal.SIGXFSZ, handler)
            full.callback(resource.setrlimit, resource.RLIMIT_FSIZE, limits)
        with pytest.raises(OutputError, match="could not be written") as info:
            for k, block in enumerate(blocks):
                r, c = divmod(k, 2)
                writer[slice(r * 256, r * 256 + 256), slice(c * 256, c * 256 + 256)] = block
    assert str(info.value).startswith("mask.tif: ")


def test_a_batch_records_an_all_nodata_scene_as_done_with_its_warning(masks, tmp_path):
    import json

    empty = write_raster(tmp_path / "empty.tif", np.zeros((4, 48, 48), np.uint16), nodata=0)
    result = invoke("run", empty, masks / "image.tif", "-o", tmp_path / "out", "--model",
                    "default")
    assert result.exit_code == 0, result.output
    assert "done    empty (0.00 Mpx, " in result.output
    assert "; warning: no valid pixels (all nodata): the mask is all nodata and the layer " \
           "empty)" in result.output
    assert "Warning:" not in result.output  # the scene's line says it, once
    scenes = json.loads((tmp_path / "out" / "summary.json").read_text())["scenes"]
    assert [s.get("warning", "")[:15] for s in scenes] == ["no valid pixels", ""]
    with rasterio.open(tmp_path / "out" / "empty.mask.tif") as ds:
        assert (ds.read(1) == 255).all()
    assert len(gpd.read_file(tmp_path / "out" / "empty.gpkg", layer="empty")) == 0


@pytest.mark.parametrize("via", ["cli", "api"])
def test_a_batch_says_a_scenes_error_as_its_caller_does(masks, via, tmp_path):
    import json

    plain = write_raster(tmp_path / "plain.tif", image(), crs=None)
    out = tmp_path / "out"
    said = option_text(f"{plain}: has no CRS (use ${{allow_no_crs=True}} to process it anyway)",
                       "cli" if via == "cli" else "python")
    if via == "cli":
        result = invoke("run", plain, masks / "image.tif", "-o", out)
        assert result.exit_code == 1 and "Traceback" not in result.output
        lines = result.output.splitlines()
        assert f"failed  plain: {said}" in lines
        assert lines[-1] == f"Error: 1 of 2 scenes failed (first: plain: {said}); fix them and " \
                            f"rerun with --resume"
    else:
        geoseg.run([plain, masks / "image.tif"], out)
    summary = json.loads((out / "summary.json").read_text())
    assert [s.get("error") for s in summary["scenes"]] == [said, None]
