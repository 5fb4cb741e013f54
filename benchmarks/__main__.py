"""``python -m benchmarks [NAME ...]``: run the named benchmarks (default: all)."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {"cpu": "benchmarks.cpu", "efficiency": "benchmarks.efficiency",
              "model": "benchmarks.model",
              "sparse": "benchmarks.sparse", "train": "benchmarks.train",
              "pretrained": "benchmarks.pretrained",
              "peers": "benchmarks.peers", "scaling": "benchmarks.scaling",
              "vectorize": "benchmarks.vectorize",
              "batch": "benchmarks.batch", "runtimes": "benchmarks.runtimes",
              "csmask": "benchmarks.csmask", "dynamic_world": "benchmarks.dynamic_world",
              "student": "benchmarks.student",
              "storage": "benchmarks.storage"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHMARKS)}")
    args, rest = parser.parse_known_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (choose from {', '.join(BENCHMARKS)})")
    for name in args.names or list(BENCHMARKS):
        importlib.import_module(BENCHMARKS[name]).main(rest)


if __name__ == "__main__":
    main()
