"""Build the plugin's zip, as QGIS's "Install from ZIP" takes it: ``geoseg_qgis/`` with
the plugin's files, geoseg's LICENSE, and geoseg's version in ``metadata.txt``.

    python3 qgis_plugin/build.py OUT_DIR      # make qgis-plugin
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGIN = HERE / "geoseg_qgis"


def version() -> str:
    text = (ROOT / "geoseg" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if found is None:
        sys.exit("geoseg/__init__.py: no __version__")
    return found[1]


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    number = version()
    archive = out / f"geoseg_qgis-{number}.zip"
    tmp = archive.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            data = path.read_bytes()
            if path.name == "metadata.txt":
                data = re.sub(rb"(?m)^version=.*$", f"version={number}".encode(), data)
            zipped.writestr(f"geoseg_qgis/{path.relative_to(PLUGIN).as_posix()}", data)
        zipped.write(ROOT / "LICENSE", "geoseg_qgis/LICENSE")
    tmp.replace(archive)  # whole or absent
    return archive


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"))
