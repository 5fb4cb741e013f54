"""geoseg benchmarks: run on demand (``make bench`` or ``python -m benchmarks NAME``).

Each benchmark prints a table and writes JSON to ``benchmarks/results/``.
"""


def save(name: str, result: dict[str, object]) -> dict[str, object]:
    """Write a benchmark's result to ``benchmarks/results/NAME.json`` (or to the folder
    ``$GEOSEG_BENCH_RESULTS``) and print it."""
    import json
    import os
    from pathlib import Path

    results = Path(os.environ.get("GEOSEG_BENCH_RESULTS")
                   or Path(__file__).resolve().parent / "results")
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result
