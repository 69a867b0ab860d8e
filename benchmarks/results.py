"""What every benchmark shares: printing a figure and keeping it in benchmarks/results/NAME.jsonl."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _record(file: str, name: str, **figures: object) -> None:
    RESULTS.mkdir(exist_ok=True)
    line = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    with (RESULTS / file).open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    print(f"{name}: " + ", ".join(f"{key}={value}" for key, value in figures.items()), flush=True)


def recorder(file: str) -> Callable[..., None]:
    """`record(name, **figures)` for one results file."""
    return functools.partial(_record, file)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
