"""Plots for the sensitivity report (matplotlib, Agg backend, imported lazily).

matplotlib is an optional dependency: `pip install 'qcompiler[plots]'`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from qcompiler.errors import UsageError


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise UsageError("plots need matplotlib, which is not installed",
                         "pip install 'qcompiler[plots]' (or pass --no-plots)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: int) -> None:
    from qcompiler.outputs import staged

    with staged(path) as (tmp,):
        fig.savefig(tmp, dpi=dpi, format="png")


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot_sensitivity(res: Dict, path, top: int = 40) -> str:
    """Bars: SQNR with only this layer quantized, and markers: with all but this layer."""
    plt = _plt()
    rows = sorted(res["layers"], key=lambda r: r["rank"])[:top]
    names = [r["kernel"] for r in rows]
    cap = 80.0
    only = [min(r["only"]["sqnr_db"] if r["only"]["sqnr_db"] is not None else cap, cap) for r in rows]
    allbut = [min(r["all_but"]["sqnr_db"] if r["all_but"]["sqnr_db"] is not None else cap, cap) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    colors = ["#d62728" if r["flags"] else "#1f77b4" for r in rows]
    ax.bar(x, only, color=colors, label="only this layer INT8 (red: flagged)")
    ax.plot(x, allbut, "k_", markersize=12, mew=2, label="all but this layer INT8")
    base = res["baseline"]["sqnr_db"]
    if base is not None:
        ax.axhline(base, color="gray", ls="--", lw=1, label=f"full INT8 ({base:.1f} dB)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("output SQNR vs FP32 (dB)")
    ax.set_title(f"per-layer sensitivity, most sensitive first ({res['target']})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)
    return str(path)


def plot_histograms(res: Dict, out_dir, worst: int = 4) -> List[str]:
    """For the `worst` layers: the histograms of their input and output activations (with
    the quantization range) and their per-channel weight ranges."""
    plt = _plt()
    hist = res.get("_hist", {})
    wr = res.get("_wranges", {})
    ranges = res.get("_ranges", {})
    rows = sorted(res["layers"], key=lambda r: r["rank"])[:worst]
    files = []
    for i, r in enumerate(rows, 1):
        k = r["kernel"]
        tensors = [t for t in _kernel_tensors(res, k) if t in hist]
        panels = len(tensors) + (1 if k in wr else 0)
        if panels == 0:
            continue
        fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2))
        axes = np.atleast_1d(axes)
        for ax, t in zip(axes, tensors):
            counts, edges = hist[t]
            if counts.size:
                ax.stairs(np.maximum(counts, 0.5), edges, fill=True, alpha=0.7)
                ax.set_yscale("log")
            if t in ranges:
                lo, hi = ranges[t]
                ax.axvline(lo, color="r", lw=1)
                ax.axvline(hi, color="r", lw=1)
            ax.set_title(t[:48], fontsize=8)
            ax.set_xlabel("value (red: quantization range)", fontsize=7)
        if k in wr:
            ax = axes[-1]
            rr = np.asarray(wr[k])
            ax.bar(np.arange(rr.size), rr, width=1.0)
            if rr.size and rr.max() / max(np.median(rr), 1e-30) > 20:
                ax.set_yscale("log")
            ax.set_title("weight range per output channel", fontsize=8)
            ax.set_xlabel("channel", fontsize=7)
        fig.suptitle(f"#{r['rank']} {k}", fontsize=9)
        fig.tight_layout()
        name = Path(out_dir) / f"ranges_{i:02d}.png"
        _save(fig, name, 100)
        plt.close(fig)
        files.append(str(name))
    return files


def _kernel_tensors(res: Dict, kernel: str) -> List[str]:
    for r in res["layers"]:
        if r["kernel"] == kernel:
            return list(r.get("tensors", []))
    return []
