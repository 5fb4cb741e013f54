#!/usr/bin/env bash
# The GPU benchmarks as one prepared run, for a machine with an NVIDIA GPU and geoseg's
# dependencies importable by `python3` (or $PYTHON), run from anywhere. Writes the printed
# tables (gpu-log.txt), JSON, and a py-spy stack dump of any step that runs past its time
# limit to $OUT (default benchmarks/results); copy the tables into benchmarks/RESULTS.md
# with the date and hardware.
#
# The efficiency steps (4096² and 8192², end to end through the device feeder against the
# model alone; target >= 0.8) print Mpx/s for both; the Dynamic World step its network's
# Mpx/s, a 10980² granule end to end, and the GPU's mask against the CPU's.
#
#   bash benchmarks/gpu.sh                  # ~6 min on one H200
#   SIZE=16384 bash benchmarks/gpu.sh       # a larger scene for the efficiency step
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
SIZE=${SIZE:-8192}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu-log.txt") 2>&1

# step NAME SECONDS CMD...: run CMD; if it is still running after SECONDS, dump its Python
# stacks (py-spy, when installed) to $OUT/hang-NAME.txt and stop it.
step() {
  local name=$1 limit=$2; shift 2
  echo; echo "== $name (at most ${limit} s)"
  "$@" & local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    echo "!! $name still running after ${limit} s: stacks in $OUT/hang-$name.txt"
    command -v py-spy >/dev/null && for p in $(pgrep -P "$pid") "$pid"; do
      py-spy dump --pid "$p" >>"$OUT/hang-$name.txt" 2>&1; done
    pkill -P "$pid"; kill "$pid"
  fi
  wait "$pid"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PY" -c "import os, torch; print('torch', torch.__version__, '| GPUs:', torch.cuda.device_count(), '|', torch.cuda.get_device_name(0), '| CPUs:', os.cpu_count())"

cat >/tmp/geoseg-model-only.py <<'EOF'
# The default network's forward pass alone, by tile and batch size (channels-last).
import time, torch, geoseg
net = geoseg.load_model("default").network.cuda().eval().to(memory_format=torch.channels_last)
torch.backends.cudnn.benchmark = True
print(f"{'tile':>5} {'batch':>6} {'fp16':>5} {'Mpx/s':>9}")
for tile in (256, 512):
    for batch in (16, 64):
        for amp in (True, False):
            x = torch.randn(batch, 4, tile, tile, device="cuda").contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cuda", enabled=amp):
                for _ in range(3):
                    net(x)
                torch.cuda.synchronize()
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < 2:
                    net(x); n += 1
                torch.cuda.synchronize()
            print(f"{tile:>5} {batch:>6} {str(amp):>5} {n * batch * tile * tile / 1e6 / (time.perf_counter() - t):>9.0f}")
EOF
step model-only 60 "$PY" /tmp/geoseg-model-only.py

cat >/tmp/geoseg-feeder-check.py <<'EOF'
# The device feeder on CUDA (pinned buffers, two batches in flight, padding) against a
# direct predict_proba on the same tiles; then batches through it from 16 threads.
import threading, time, numpy as np, geoseg
from geoseg.feeder import DeviceFeeder
from geoseg.inference import Predictor
p = Predictor(geoseg.load_model("default"), "cuda")
rng = np.random.default_rng(0)
tiles = rng.integers(1, 4000, (16, 4, 512, 512), dtype=np.uint16)
valid = np.ones((16, 512, 512), bool); valid[3, :100] = False
weights = rng.random((16, 512, 512), dtype=np.float32)
direct = p.predict_proba(tiles[:13], valid[:13], weights[:13], dtype=np.uint16)
with DeviceFeeder(p) as f:
    fed = f.predict_proba(tiles[:13], valid[:13], weights[:13], dtype=np.uint16, pad_to=16)
    diff = np.abs(fed.astype(np.int32) - direct).max()
    print("feeder vs direct, batch 13 padded to 16: max difference", diff, "of 65535")
    t = time.perf_counter()
    def task():
        for _ in range(12):
            f.predict_proba(tiles, valid, weights, dtype=np.uint16)
    threads = [threading.Thread(target=task) for _ in range(16)]
    [x.start() for x in threads]; [x.join() for x in threads]
    s = time.perf_counter() - t
    print(f"192 batches of 16 x 512² through the feeder: {s:.2f} s, "
          f"{192 * 16 * 512 * 512 / 1e6 / s:.0f} Mpx/s of tile")
EOF
step feeder-check 60 "$PY" /tmp/geoseg-feeder-check.py

rm -f benchmarks/results/*-cuda.json  # so no step copies an earlier run's result
step efficiency-4096 120 "$PY" -m benchmarks efficiency --device cuda --size 4096 --rounds 2
mv benchmarks/results/efficiency-cuda.json "$OUT/efficiency-cuda-4096.json" 2>/dev/null

step model 90 "$PY" -m benchmarks model --device cuda
mv benchmarks/results/model-cuda.json "$OUT/" 2>/dev/null

step peers 120 "$PY" -m benchmarks peers --device cuda --size 4096
mv benchmarks/results/peers-cuda.json "$OUT/" 2>/dev/null

step "scene-$SIZE" 150 "$PY" -c "from geoseg import synthetic; synthetic.write_sample_data('/tmp/geoseg-bench', size=$SIZE, seed=3, nodata_corner=False, overwrite=True)"
step "efficiency-$SIZE" 150 "$PY" -m benchmarks efficiency --device cuda \
  --scene /tmp/geoseg-bench/scene_3.tif --batch-size 32 --rounds 2
mv benchmarks/results/efficiency-cuda.json "$OUT/efficiency-cuda-$SIZE.json" 2>/dev/null

cat >/tmp/geoseg-dw.py <<'EOF'
# Dynamic World on the GPU: its torch network alone by batch (fp32, as converted), then
# geoseg predict on one Sentinel-2 granule's size (a real L1C sample mirrored to 10980²),
# and the GPU's mask against the CPU's ONNX graph on a 2048² scene.
import os, subprocess, sys, time, numpy as np, rasterio, torch, geoseg
sys.path.insert(0, os.getcwd())  # the repository (gpu.sh runs from its root)
from benchmarks.dynamic_world import DATA, stack_of, write
from benchmarks.csmask import mirrored
net = geoseg.load_model("dynamic-world").network.cuda().eval()
print(f"{'tile':>5} {'batch':>6} {'Mpx/s':>9}")
for tile, batch in ((512, 16), (512, 32), (1024, 8)):
    x = torch.rand(batch, 9, tile, tile, device="cuda") * 3000
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        torch.cuda.synchronize(); n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 2:
            net(x); n += 1
        torch.cuda.synchronize()
    print(f"{tile:>5} {batch:>6} {n * batch * tile * tile / 1e6 / (time.perf_counter() - t):>9.0f}")
dn, crs, transform = stack_of(sorted(DATA.glob("S2*"))[0])
masks = {}
for size, devices in ((2048, ("cuda", "cpu")), (10980, ("cuda",))):
    path = f"/tmp/geoseg-dw-{size}.tif"
    write(__import__("pathlib").Path(path), mirrored(dn, size), crs, transform)
    for device in devices:
        out = f"/tmp/geoseg-dw-{size}-{device}.tif"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "geoseg.cli", "predict", path, "-o", out, "--model",
                        "dynamic-world", "--device", device, "--overwrite", "--no-progress"]
                       + (["--batch-size", "16"] if device == "cuda" else []), check=True)
        s = time.perf_counter() - t
        print(f"geoseg predict {size}² on {device}: {s:.1f} s, {size * size / 1e6 / s:.1f} Mpx/s")
        with rasterio.open(out) as ds:
            masks[size, device] = ds.read(1)
print("2048²: GPU (torch) and CPU (ONNX) masks agree on",
      f"{np.mean(masks[2048, 'cuda'] == masks[2048, 'cpu']):.5f} of pixels")
EOF
step dynamic-world 300 "$PY" /tmp/geoseg-dw.py

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -gt 1 ]; then
  echo "More than one GPU: run 'geoseg run' over many scenes with one worker per GPU"
  echo "(dask-cuda's LocalCUDACluster, or 'dask worker --resources GPU=1' per GPU) and compare."
fi
