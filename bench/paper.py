"""The DFSQ paper's own tables (arXiv 2305.05888, Tables 2 and 3, Table 1 and Appendix C), read at run time from
``../shared/reference/dfsq_paper_tables.json`` (never copied into the repository). Every figure read here is the
paper's, and is labelled as such wherever it is shown.

``load_paper()`` returns None when the file is absent (the benches then render without paper columns) and a
one-line UserError when it is present but malformed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dfsq.data import SHARED_DATA
from golden.errors import UserError

PAPER_JSON = Path(os.environ.get("DFSQ_PAPER_TABLES", SHARED_DATA.parent / "reference" / "dfsq_paper_tables.json"))
SOURCE = "DFSQ paper (arXiv 2305.05888)"
PAPER_METHODS = {"minmax": "Min-Max", "dfsq": "DFSQ", "brecq": "BRECQ", "qdrop": "QDROP"}
PAPER_MODELS = {"edsr": "EDSR", "rdn": "RDN"}
PAPER_DATASETS = {"B100": "BSD100"}


def load_paper(path: str | Path | None = None) -> dict | None:
    path = Path(path) if path is not None else PAPER_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise UserError(f"{path} has no 'tables' object: not the paper's tables")
    return data


def _pair(v):
    if isinstance(v, dict) and "psnr" in v:
        return float(v["psnr"]), (None if v.get("ssim") is None else float(v["ssim"]))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return float(v[0]), float(v[1])
    return None


def paper_cell(paper: dict | None, model: str, scale: int, dataset: str, method: str, bits: int | None):
    """(psnr, ssim) of the paper for a cell, or None when the paper has no such cell (or no paper)."""
    if paper is None:
        return None
    t = paper["tables"].get(f"{PAPER_MODELS.get(model, model)}x{scale}", {})
    d = t.get(PAPER_DATASETS.get(dataset, dataset), {})
    if method == "fp":
        return _pair(d.get("FP"))
    m = d.get(PAPER_METHODS.get(method, method), {})
    return _pair(m.get(str(bits))) if bits is not None else None


def paper_drop(paper, model, scale, dataset, method, bits):
    """The paper's PSNR drop from its own FP, or None."""
    p, fp = paper_cell(paper, model, scale, dataset, method, bits), paper_cell(paper, model, scale, dataset, "fp",
                                                                                None)
    return None if p is None or fp is None else p[0] - fp[0]


def table1(paper: dict | None, row: str, dataset: str):
    """The paper's Table 1 (psnr, ssim) for ``row`` in layerwise_with_norm / channelwise_with_norm."""
    if paper is None:
        return None
    return _pair(paper.get("ablation_table1", {}).get(row, {}).get(PAPER_DATASETS.get(dataset, dataset)))


def appendix_c(paper: dict | None) -> dict:
    """The paper's stated Appendix C PSNR changes: {(from_words, to_words): dB}."""
    if paper is None:
        return {}
    a = paper.get("universal_set_ablation_appendix_c", {})
    out = {}
    for k, v in a.items():
        if k.endswith("_dB") and "_to_" in k:
            f, t = k[:-3].split("_to_")
            out[(int(f.split("x")[0]), int(t.split("x")[0]))] = float(v)
    return out
