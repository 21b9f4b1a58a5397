"""Pipeline edits for the accuracy options, so that a build with `equalize`,
`bias_correction` or `data_free` set runs the passes those need, in the right places.

    names = adjust_pipeline(target.pipeline, options)

- `equalize`: record-bn-stats before fold-bn, equalize after fuse-conv-bias-act (or
  after fold-bn when the pipeline has no fusion pass);
- `bias_correction`: True adds bias-correction after calibrate (or calibrate-data-free;
  calibrate then measures its E[x] in its own run), False takes it out of a pipeline
  that has it;
- `int16_layers` (from a per-layer override file): precision-overrides before place-qdq;
- `data_free`: calibrate becomes calibrate-data-free, and equalization and bias
  correction are on unless the options turn them off (`equalize: False`...).
An explicit `--pipeline` is the user's word and is left alone; passes already present
are not added twice.
"""

from __future__ import annotations

from typing import Dict, List, Sequence


def _insert_after(order: List[str], anchor_choices: Sequence[str], name: str) -> None:
    for a in anchor_choices:
        if a in order:
            order.insert(order.index(a) + 1, name)
            return
    raise ValueError(f"cannot place {name}: none of {', '.join(anchor_choices)} is in the pipeline")


def adjust_pipeline(names: Sequence[str], options: Dict) -> List[str]:
    order = [n for n in names]
    data_free = bool(options.get("data_free"))
    eq = options.get("equalize", data_free)
    bc = options.get("bias_correction", data_free)
    if data_free and "calibrate" in order:
        order[order.index("calibrate")] = "calibrate-data-free"
    if (eq or data_free) and "fold-bn" in order and "record-bn-stats" not in order:
        order.insert(order.index("fold-bn"), "record-bn-stats")
    if eq and "equalize" not in order:
        _insert_after(order, ("fuse-conv-bias-act", "fold-bn"), "equalize")
    if bc and "bias-correction" not in order:
        _insert_after(order, ("calibrate", "calibrate-data-free"), "bias-correction")
    if options.get("bias_correction") is False and "bias-correction" in order:
        order.remove("bias-correction")
    if options.get("int16_layers") and "precision-overrides" not in order and "place-qdq" in order:
        order.insert(order.index("place-qdq"), "precision-overrides")
    return order


def build_options_help() -> Dict[str, str]:
    """The build(options=...) keys the accuracy passes read, with their meaning."""
    return {
        "data_free": "no calibration data: ranges from BN statistics (calibrate-data-free), CLE and bias correction on",
        "equalize": "cross-layer equalization (record-bn-stats + equalize)",
        "absorb_bias": "high-bias absorption in equalize (needs BN statistics)",
        "absorb_sigmas": "absorb max(0, beta - k gamma), k (default 3)",
        "bias_correction": "bias-correction pass after calibration (False: none)",
        "bn_sigmas": "data-free activation range beta +- k gamma, k (default 6)",
        "input_stats": '{"input" or "*": {"mean": m, "std": s, "range": [lo, hi]}} for data-free builds',
        "keep_float": "node-name patterns kept float (insert-observers)",
        "layer_overrides": "per-layer precision config (qcompiler.precision.overrides)",
    }
