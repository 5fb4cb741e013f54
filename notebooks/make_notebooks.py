"""Write the notebooks of this folder from the cells below (stored without outputs).

    python notebooks/make_notebooks.py

Edit the cells here, not the .ipynb files: the tests execute the notebooks and check that
they are what this script writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("md", """# geoseg quick start

From a GeoTIFF to a land-cover map: predict lazily, look at a window, measure the area of
each class with xarray, then write the mask and its polygons and show them.

Everything here runs offline on a CPU in well under a minute: the scene is generated
(`geoseg.write_sample_data`) and the model is the one bundled with geoseg. Point `scene`
at your own 4-band (blue, green, red, near-infrared) GeoTIFF to map it instead."""),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

import geoseg

scene, _ = geoseg.write_sample_data("data", size=1024, seed=7, overwrite=True)
scene"""),
    ("md", """## Predict, lazily

`geoseg.predict` returns a dask-backed `xarray.DataArray` at once: nothing runs until
values are needed. It carries the scene's CRS and transform, and the class names and
colours of the model."""),
    ("code", """mask = geoseg.predict(scene)
print(mask.rio.crs, mask.rio.resolution(), mask.shape)
names = mask.attrs["class_names"]
colors = np.array(mask.attrs["class_colors"]) / 255
mask"""),
    ("md", """## Look at one window

Selecting a window computes only the tiles under it."""),
    ("code", """import rasterio

window = mask.isel(y=slice(0, 512), x=slice(0, 512)).compute()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5))
with rasterio.open(scene) as ds:
    rgb = ds.read([3, 2, 1], window=((0, 512), (0, 512))).astype("float32")
rgb = np.clip(rgb / np.percentile(rgb[rgb > 0], 98), 0, 1)
left.imshow(np.moveaxis(rgb, 0, -1))
left.set_title("image (red, green, blue)")
shown = np.ma.masked_equal(window.values, 255)
right.imshow(shown, cmap=ListedColormap(colors), vmin=0, vmax=len(names) - 1,
             interpolation="nearest")
right.set_title("predicted classes")
for ax in (left, right):
    ax.set_axis_off()"""),
    ("md", """## Area per class, with xarray

One pixel covers `|a × e|` square metres of the transform (the CRS is projected, in
metres). Nodata pixels hold 255 and count for no class."""),
    ("code", """import xarray as xr

a, _, _, _, e, _ = mask.rio.transform()[:6]
pixel_m2 = abs(a * e)
per_class = [(mask == k).sum() for k in range(len(names))]
area_ha = (xr.concat(per_class, dim="class") * pixel_m2 / 1e4).compute()
area_ha = area_ha.assign_coords({"class": names})
area_ha.to_series().round(2)"""),
    ("md", """## Write the mask, vectorize, show the polygons

Writing gives a Cloud-Optimized GeoTIFF with a QGIS style beside it. `geoseg.vectorize`
turns it into polygons, one per connected region of one class, with true ground areas;
`min_area` merges specks into their neighbours."""),
    ("code", """out = Path("output")
out.mkdir(exist_ok=True)
written = geoseg.predict(scene, out / "scene_7.mask.tif", overwrite=True)
polygons = geoseg.vectorize(out / "scene_7.mask.tif", out / "scene_7.gpkg", min_area=200,
                            overwrite=True)
polygons.head()"""),
    ("code", """summary = polygons.groupby("class_name").agg(polygons=("area_m2", "size"),
                                             area_ha=("area_m2", "sum"))
summary["area_ha"] = (summary["area_ha"] / 1e4).round(2)
summary"""),
    ("code", """ax = polygons.plot(color=[colors[k] for k in polygons.class_id], edgecolor="black",
                   linewidth=0.1, figsize=(7, 7))
ax.set_title("polygons (min_area 200 m²)")
ax.set_axis_off()"""),
    ("md", """`scene_7.mask.tif` and `scene_7.gpkg` open styled in QGIS. For an interactive map in a
browser, `polygons.explore(column="class_name")` (needs `folium`)."""),
]

TRAINING = [
    ("md", """# Train and evaluate a model on your own labels

`geoseg.train` takes images and reference labels (a class raster or polygons) and saves a
model that `geoseg.predict` loads by its path. Here both come from
`geoseg.write_sample_data`; a few quick epochs keep it short, so expect a rough model. For
a real one, train for 15-20 epochs of 100 steps (`workflows/train_default_model.py`)."""),
    ("code", """import logging
from pathlib import Path

import matplotlib.pyplot as plt

import geoseg

logging.basicConfig(format="%(message)s")
logging.getLogger("geoseg").setLevel(logging.INFO)  # geoseg reports each epoch
train_image, train_labels = geoseg.write_sample_data("data", size=512, seed=1, overwrite=True)
test_image, test_labels = geoseg.write_sample_data("data", size=512, seed=2, overwrite=True)"""),
    ("code", """model = geoseg.train([train_image], [train_labels], "my-model", chip_size=64, epochs=3,
                     steps_per_epoch=15, batch_size=4, overwrite=True)
print(model.spec.class_names)
print("best validation mIoU:", round(model.spec.metrics["val_miou"], 3),
      "at epoch", model.spec.metrics["best_epoch"])"""),
    ("md", """The model card keeps the history of every epoch."""),
    ("code", """history = model.spec.metrics["history"]
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o",
        label="training loss")
ax.plot([h["epoch"] for h in history], [h["val_miou"] for h in history], marker="o",
        label="validation mIoU")
ax.set_xlabel("epoch")
ax.legend()"""),
    ("md", """## Evaluate on a scene the model never saw"""),
    ("code", """Path("output").mkdir(exist_ok=True)
evaluation = geoseg.evaluate(test_image, test_labels, model="my-model",
                             report="output/evaluation.json",
                             confusion_png="output/confusion.png", overwrite=True)
print(evaluation.table())"""),
    ("code", """from IPython.display import Image

Image("output/confusion.png")"""),
]

NOTEBOOKS = {"quickstart.ipynb": QUICKSTART, "training.ipynb": TRAINING}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_markdown_cell(text) if kind == "md" else new_code_cell(text)
                             for kind, text in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: the files only change when the cells do
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print(HERE / name, file=sys.stderr)


if __name__ == "__main__":
    main()
