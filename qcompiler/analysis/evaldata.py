"""Evaluation data for the accuracy tools, apart from the calibration data.

A task metric (`--max-drop D --metric ...`) needs labelled samples, and the search should
not judge a model on the samples it was calibrated on. `--eval-data FILE` gives them:

- `.npz`: one array per model input (by input name) plus any other arrays (labels, ids),
  all with the samples along the first axis; the other arrays travel in the batches, so
  the metric sees them (the model does not);
- `.npy`: the samples of a single-input model (no labels: for SQNR/cosine budgets).

From Python: a dict of arrays, or a list of batch dicts (used as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from qcompiler.errors import CalibrationError, UsageError

#: samples per evaluation batch when the model's batch dimension is not fixed
DEFAULT_BATCH = 32


def _read(path: Path) -> Dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"evaluation data '{path}' does not exist", "check the --eval-data path")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if path.suffix == ".npy":
            return {None: np.load(path, allow_pickle=False)}
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the evaluation data '{path}': {e}", "write it with numpy.savez") from None
    raise UsageError(f"evaluation data '{path}' is not a .npz or .npy file",
                     "save the inputs and labels with numpy.savez(path, x=inputs, label=labels)")


def load_eval_data(source, model, batch_size: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
    """Evaluation batches `[{input: array, ..., label: array}, ...]` from a path, a dict
    of arrays or a list of batches. Inputs are checked against the model as calibration
    data is (names, shapes, dtypes, NaN/Inf); the other arrays must have as many samples."""
    from qcompiler.calib.data import load_calibration
    from qcompiler.calib.specs import input_specs
    from qcompiler.ir import read_model

    if isinstance(source, (list, tuple)):
        return [dict(b) for b in source]
    if callable(source):
        return [dict(b) for b in source()]
    what = "evaluation data"
    if isinstance(source, (str, Path)):
        what = f"evaluation data '{source}'"
        arrays = _read(Path(source))
    elif isinstance(source, dict):
        arrays = dict(source)
    else:
        raise UsageError(f"evaluation data of type {type(source).__name__} is not supported",
                         "give a .npz path, a dict of arrays or a list of batch dicts")
    proto = model if hasattr(model, "graph") else read_model(model)
    specs = input_specs(proto)
    names = list(specs)
    if None in arrays:  # a bare .npy
        if len(names) != 1:
            raise UsageError(f"{what} is one array, but the model has {len(names)} inputs ({', '.join(names)})",
                             "write a .npz with one array per input")
        arrays = {names[0]: arrays.pop(None)}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"{what} has no array for the model input(s) {', '.join(repr(n) for n in missing)} "
                         f"(it has {', '.join(repr(k) for k in arrays)})",
                         "name the arrays after the model inputs: numpy.savez(path, x=inputs, label=labels)")
    inputs = {n: arrays[n] for n in names}
    extras = {k: np.asarray(v) for k, v in arrays.items() if k not in specs}
    n = int(np.shape(inputs[names[0]])[0]) if np.ndim(inputs[names[0]]) else 0
    for k, v in extras.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise UsageError(f"{what}: array '{k}' has {v.shape[0] if v.ndim else 0} samples, the inputs {n}",
                             "give every array the samples along its first axis")
    fixed = {int(s[0][0]) for s in specs.values() if len(s[0]) and isinstance(s[0][0], int)}
    bs = None if fixed else int(batch_size or DEFAULT_BATCH)
    try:
        batches = list(load_calibration(inputs, specs, batch_size=bs))
    except CalibrationError as e:
        raise UsageError(f"{what}: {e.message}", e.hint) from None
    start = 0
    for b in batches:
        k = len(next(iter(b.values())))
        for name, v in extras.items():
            b[name] = v[start:start + k]
        start += k
    return batches
