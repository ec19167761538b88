"""Plots for docs/results.md (matplotlib, PNG, written atomically beside the Markdown).

* :func:`plot_drops`: PSNR drop from FP against bits, one panel per dataset, one colour per method; ours solid,
  the paper's dashed (our BRECQ and QDROP: the cpu budget of dfsq.reconstruct, where measured).
* :func:`plot_words`: the universal-set ablation (Appendix C): our PSNR change from the 4-word default against the
  number of word sets at W4A4 and W3A3, per dataset, with the paper's stated changes as a dashed line.
"""
from __future__ import annotations

from pathlib import Path

from bench.paper import appendix_c, paper_drop
from golden.files import atomic_output

COLORS = {"minmax": "tab:red", "uniform": "tab:orange", "dfsq-uniform": "tab:brown", "dfsq": "tab:blue",
          "brecq": "tab:green", "qdrop": "tab:purple"}
LABELS = {"minmax": "Min-Max", "uniform": "Uniform-MSE", "dfsq-uniform": "DFSQ-norm uniform", "dfsq": "DFSQ",
          "brecq": "BRECQ", "qdrop": "QDROP"}
OURS_ONLY = ("uniform", "dfsq-uniform")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_output(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_drops(res: dict, paper, model: str, scale: int, words: int, datasets, bits_list, path: Path) -> bool:
    """Write the drop-vs-bits figure for one model and scale; False (nothing written) when nothing to plot."""
    from bench.results_md import _drop

    plt = _plt()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    any_line = False
    bits = sorted(bits_list)
    for ax, d in zip(axes[0], datasets):
        for m in ("minmax", "uniform", "dfsq-uniform", "dfsq", "brecq", "qdrop"):
            pts = [(b, _drop(res, model, scale, m, b, words, d)) for b in bits]   # ours, where measured
            pts = [(b, v) for b, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts), "-o", color=COLORS[m], label=f"{LABELS[m]} (ours)", ms=4)
                any_line = True
            if m not in OURS_ONLY:
                pts = [(b, paper_drop(paper, model, scale, d, m, b)) for b in bits]
                pts = [(b, v) for b, v in pts if v is not None]
                if pts:
                    ax.plot(*zip(*pts), "--s", color=COLORS[m], label=f"{LABELS[m]} (paper)", ms=3, alpha=0.8)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"{d}")
        ax.set_xlabel("W = A bits")
        ax.set_xticks(bits)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR drop from FP (dB)")
    h, lab = axes[0][0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", ncol=4, bbox_to_anchor=(0.5, -0.06), fontsize=8)
    fig.suptitle(f"{model.upper()} x{scale}: PSNR drop against bits (ours solid, paper dashed)", y=1.04)
    if any_line:
        _save(fig, path)
    plt.close(fig)
    return any_line


def plot_words(res: dict, paper, datasets, path: Path) -> bool:
    """Write the Appendix C figure (x2): our PSNR change from the 4-word default against the number of word sets,
    at W4A4 and W3A3, per dataset; the paper's stated changes chained from 0 at 4 words, dashed. False when no
    word count other than the default is measured."""
    from bench.psnr_table import key

    plt = _plt()
    stated = appendix_c(paper)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8), squeeze=False)
    fig.subplots_adjust(wspace=0.3)
    any_line = False
    for ax, b in zip(axes[0], (4, 3)):
        for i, d in enumerate(datasets):
            pts = dict((w, r["psnr"]) for w, r in ((w, res.get(key(2, "dfsq", b, w, d))) for w in (2, 3, 4, 5))
                       if r is not None)
            if len(pts) < 2 or 4 not in pts:
                continue
            any_line = True
            ws = sorted(pts)
            ax.plot(ws, [pts[w] - pts[4] for w in ws], "-o", color=f"C{i}", label=f"{d} (ours)", ms=4)
        if stated:
            p = {4: 0.0}
            p[3] = -stated.get((3, 4), 0.0)
            p[2] = p[3] - stated.get((2, 3), 0.0)
            p[5] = stated.get((4, 5), 0.0)
            ax.plot(sorted(p), [p[w] for w in sorted(p)], "--", color="black", alpha=0.7, lw=1.2,
                    label="paper's stated changes (model/dataset not stated)")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"x2 W{b}A{b}")
        ax.set_xlabel("word sets in the universal set")
        ax.set_xticks([2, 3, 4, 5])
        ax.set_ylabel("PSNR-Y change from 4 words (dB)")
        ax.grid(alpha=0.3)
    h, lab = axes[0][0].get_legend_handles_labels()
    if h:
        fig.legend(h, lab, loc="upper center", ncol=3, bbox_to_anchor=(0.5, -0.02), fontsize=8)
    fig.suptitle("Universal-set ablation (paper Appendix C): ours solid, the paper's stated changes dashed", y=1.03)
    if any_line:
        _save(fig, path)
    plt.close(fig)
    return any_line


def write_plots(cache: dict, paper, words: int, scales, datasets, bits_list, out_md: Path) -> dict:
    """Every plot beside ``out_md``; returns {title: path relative to out_md's folder} of those written."""
    from bench.results_md import MODEL_LABEL, MODELS, _present

    res = cache["results"]
    folder = out_md.parent
    stem = out_md.stem
    out = {}
    for model in MODELS:
        for scale in scales:
            if not _present(res, model, scale):
                continue
            name = f"{stem}_drops_{model}_x{scale}.png"
            if plot_drops(res, paper, model, scale, words, datasets, bits_list, folder / name):
                out[f"{MODEL_LABEL[model]} x{scale}: PSNR drop against bits"] = name
    name = f"{stem}_words.png"
    if plot_words(res, paper, datasets, folder / name):
        out["Universal-set ablation (Appendix C)"] = name
    return out
