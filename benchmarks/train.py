"""Training speed: geoseg's loop against the limit, a plain torch loop on in-memory tensors.

Both train the same network (the default U-Net of ``geoseg train``) with the same loss
(cross-entropy + Dice), optimiser, batch and chip size, in one process with the same
torch threads. geoseg's figure is its second epoch's steps (the first warms up), chips
read from a GeoTIFF on disk around the labels, augmented, in a thread ahead of the step;
the plain loop's are random tensors already in memory, after warm-up steps. The ratio is
what the data path costs (goal ≥ 0.8 on CPU).

    python -m benchmarks train                   # ~3 min on 2 cores
    python -m benchmarks train --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import save


def plain_loop(spec, steps: int, batch: int, chip: int, device: str) -> float:  # type: ignore[no-untyped-def]
    """Samples per second of the plainest loop: tensors in memory, forward, loss, step."""
    import torch

    from geoseg.fitting import loss_function
    from geoseg.model import build_network

    torch.manual_seed(0)
    network = build_network(spec).to(device).train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3)
    criterion = loss_function("ce+dice", len(spec.classes), (), device)
    x = torch.randn(batch, len(spec.bands), chip, chip, device=device)
    y = torch.randint(0, len(spec.classes), (batch, chip, chip), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = network(x)
        loss = criterion(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict[str, object]:
    import torch

    import geoseg

    parser = argparse.ArgumentParser(prog="python -m benchmarks train")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=2048, help="the scene's side in pixels")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image, labels = geoseg.write_sample_data(Path(tmp), size=args.size, seed=5)
        model = geoseg.train([image], [labels], Path(tmp) / "m", chip_size=args.chip_size,
                             epochs=2, steps_per_epoch=args.steps, batch_size=args.batch_size,
                             patience=2, device=args.device)
    history = model.spec.metrics["history"]
    ours = history[-1]["samples_per_s"]
    limit = plain_loop(model.spec, args.steps, args.batch_size, args.chip_size, args.device)
    result = {"benchmark": "train", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "device": args.device, "torch_threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "chip_size": args.chip_size, "steps": args.steps,
              "geoseg_samples_per_s": ours, "plain_loop_samples_per_s": round(limit, 2),
              "fraction": round(ours / limit, 3), "goal": 0.8}
    print(f"{'loop':28} {'samples/s':>10}")
    print(f"{'geoseg train (from disk)':28} {ours:>10.2f}")
    print(f"{'plain torch (in memory)':28} {limit:>10.2f}")
    print(f"geoseg / plain: {ours / limit:.2f} (goal ≥ 0.8)")
    return save("train", result)


if __name__ == "__main__":
    main(sys.argv[1:])
