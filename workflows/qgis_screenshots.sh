#!/usr/bin/env bash
# README's QGIS screenshots from real QGIS under Xvfb: a fresh profile with the plugin
# enabled, geoseg from this checkout's .venv, the first real Sentinel-2 sample.
#   bash workflows/qgis_screenshots.sh [OUT_DIR]      (default: docs/images)
# Needs Debian's qgis, python3-qgis and xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath "${1:-docs/images}")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
export QGIS_CUSTOM_CONFIG_PATH="$profile" QGIS_PLUGINPATH="$PWD/qgis_plugin"
export GEOSEG_EXECUTABLE="${GEOSEG_EXECUTABLE:-$PWD/.venv/bin/geoseg}"
export SHOT_DIR="$out" SHOT_SCENE
SHOT_SCENE=$(ls -d "$PWD"/tests/data/sentinel2-l1c/S2*/ | head -1)
qgis_process=$(command -v qgis_process.bin || command -v qgis_process)
QT_QPA_PLATFORM=offscreen "$qgis_process" plugins enable geoseg_qgis >/dev/null
rm -f "$out/screenshots.error"
xvfb-run -a -s "-screen 0 1400x860x24" qgis --nologo --noversioncheck \
  --code "$PWD/workflows/qgis_screenshots.py" >/dev/null 2>&1 || true
if [ -f "$out/screenshots.error" ]; then
  cat "$out/screenshots.error" >&2
  rm -f "$out/screenshots.error"
  exit 1
fi
ls -l "$out/qgis-map.png" "$out/qgis-predict.png"
