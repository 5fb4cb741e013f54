#!/usr/bin/env bash
# The GPU benchmarks as one prepared run, for a machine with an NVIDIA GPU and geoseg's
# dependencies importable by `python3` (or $PYTHON). Writes JSON, the printed tables and a
# py-spy profile (when py-spy is there) to $OUT (default benchmarks/results); copy the
# tables into benchmarks/RESULTS.md with the date and hardware.
#
#   bash benchmarks/gpu.sh                       # ~4 min on one H200, scenes generated here
#   SIZE=16384 bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
SIZE=${SIZE:-8192}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo; echo "== $*"; }

log machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PY" -c "import os, torch; print('torch', torch.__version__, '| GPUs:', torch.cuda.device_count(), '|', torch.cuda.get_device_name(0), '| CPUs:', os.cpu_count())"

log "model only: the default network's forward pass by tile and batch size (fp16 autocast, channels-last)"
"$PY" - <<'EOF'
import time, torch, geoseg
net = geoseg.load_model("default").network.cuda().eval().to(memory_format=torch.channels_last)
torch.backends.cudnn.benchmark = True
print(f"{'tile':>5} {'batch':>6} {'amp':>5} {'Mpx/s':>9}")
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

log "a ${SIZE}² scene (4-band uint16, data everywhere)"
"$PY" -c "from geoseg import synthetic; synthetic.write_sample_data('/tmp/geoseg-bench', size=$SIZE, seed=3, nodata_corner=False, overwrite=True)"
for batch in 16 64; do
  log "efficiency, ${SIZE}², batch $batch"
  "$PY" -m benchmarks efficiency --device cuda --scene /tmp/geoseg-bench/scene_3.tif \
    --batch-size "$batch" --rounds 2
  cp benchmarks/results/efficiency-cuda.json "$OUT/efficiency-cuda-b$batch.json" 2>/dev/null
done

log "default model on cuda: speed and accuracy on held-out scenes"
"$PY" -m benchmarks model --device cuda
cp benchmarks/results/model-cuda.json "$OUT/" 2>/dev/null

log "peers, 4096², cuda"
"$PY" -m benchmarks peers --device cuda --size 4096
cp benchmarks/results/peers-cuda.json "$OUT/" 2>/dev/null

if command -v py-spy >/dev/null; then
  log "py-spy profile of one predict (raw stacks in $OUT/pyspy-predict-cuda.txt)"
  "$PY" -m geoseg.cli sample-data /tmp/geoseg-prof --size 4096 --seed 3 --overwrite >/dev/null
  py-spy record -r 200 --threads --idle -f raw -o "$OUT/pyspy-predict-cuda.txt" -- "$PY" -c "
import time, geoseg
geoseg.predict('/tmp/geoseg-prof/scene_3.tif', '/tmp/geoseg-prof/warm.tif', device='cuda', overwrite=True)
t = time.perf_counter()
geoseg.predict('/tmp/geoseg-prof/scene_3.tif', '/tmp/geoseg-prof/mask.tif', device='cuda', overwrite=True)
print('predict 4096² on cuda under py-spy:', round(time.perf_counter() - t, 2), 's')
"
fi
