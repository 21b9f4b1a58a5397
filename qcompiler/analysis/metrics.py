"""Task metrics for `--max-drop` (`metric(outputs_list, batches) -> float`, higher is better).

    qcompiler build model.onnx --calib calib.npy --eval-data val.npz \
        --max-drop 0.5 --metric qcompiler.analysis.metrics:top1

`outputs_list[i]` is the list of model outputs on `batches[i]`; the batches are the
evaluation batches, with every array of the `--eval-data` file (the model inputs, and the
labels the metric reads).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

__all__ = ["top1", "LABEL_KEYS"]

#: where `top1` looks for the labels in a batch, in this order
LABEL_KEYS = ("label", "labels", "y")


def _labels(batch: Dict[str, np.ndarray]) -> np.ndarray:
    for k in LABEL_KEYS:
        if k in batch:
            return np.asarray(batch[k]).reshape(-1)
    raise ValueError(f"top1 needs the labels in the evaluation batches (an array named "
                     f"{' or '.join(repr(k) for k in LABEL_KEYS)} in --eval-data); the batches hold "
                     f"{', '.join(repr(k) for k in batch)}")


def top1(outputs_list: Sequence[List[np.ndarray]], batches: Sequence[Dict[str, np.ndarray]]) -> float:
    """Top-1 accuracy in percent of the first output (scores or probabilities, one row per
    sample, argmax over the rest) against the batches' integer labels: `--max-drop 0.5`
    then means half a percentage point."""
    hits = total = 0
    for outs, batch in zip(outputs_list, batches):
        y = _labels(batch)
        scores = np.asarray(outs[0])
        pred = scores.reshape(len(scores), -1).argmax(axis=1)
        if pred.shape != y.shape:
            raise ValueError(f"top1: {pred.size} predictions but {y.size} labels in a batch")
        hits += int(np.sum(pred == y))
        total += int(y.size)
    if total == 0:
        raise ValueError("top1: no samples")
    return 100.0 * hits / total
