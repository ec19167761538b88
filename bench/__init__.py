"""Benchmarks: each prints its figures and saves JSON + Markdown (+ a plot).

``RESULTS`` holds the tracked results the docs cite; a benchmark writes there by default only when its default run
regenerates such a documented result. Every other default output goes to ``SCRATCH`` (``build/bench/``, ignored
by git); pass ``--out bench/results/...`` to update a tracked result.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SCRATCH = ROOT / "build" / "bench"
