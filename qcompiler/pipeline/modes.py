"""Pipeline edits for the advanced options, so that a build with `adaround`, `mode:
dynamic` or `mode: import` runs the passes those need, in the right places.

    names, options = prepare_build(model, target_pipeline, options, explicit=False)

- `mode: "static"` (default): the target's pipeline; with `adaround: true` the adaround
  pass goes right before place-qdq (after calibrate and unify-concat-scales);
- `mode: "dynamic"`: canonicalize, fold-bn, quantize-dynamic (no calibration);
- `mode: "import"`: canonicalize, import-qdq, then the target's passes from place-qdq on
  (place-qdq, fold-requant[, lower-layout]); no calibration;
- `mode: "auto"` (what prepare_build does when no mode is given and it sees the model):
  a model that already holds Q/DQ nodes is imported; one in QOperator or integer form
  stops with a message saying what it is; anything else is static. Given explicitly with
  calibration data, the driver (qcompiler.driver.auto_mode) also builds dynamic when the
  static build's held-out SQNR is below `warn_sqnr`, and keeps the better.
- int4 / int16 (`weight_dtype`, `activation_dtype`, `layer_dtypes`): `min_opset: 21`.

An explicit `--pipeline` is the user's word: it is left as it is (the options still
apply, and the passes check what they need).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from qcompiler.errors import ModelError, UsageError

from qcompiler.precision.dtypes import prepare_options

MODES = ("static", "dynamic", "import", "auto")
FP32_FRONT = ("canonicalize", "fold-bn")


def advanced_pipeline(names: Sequence[str], options: Dict, explicit: bool = False) -> List[str]:
    """The pass list for these options, from the target's (or the given) pipeline."""
    order = [n for n in names]
    if explicit:
        return order
    mode = options.get("mode", "static") or "static"
    if mode not in MODES:
        raise UsageError(f"mode {mode!r} is not one of {', '.join(MODES[:3])}", "use --mode static|dynamic|import")
    if mode == "dynamic":
        return [n for n in FP32_FRONT] + ["quantize-dynamic"]
    if mode == "import":
        tail = order[order.index("place-qdq"):] if "place-qdq" in order else ["place-qdq", "fold-requant"]
        return ["canonicalize", "import-qdq"] + [n for n in tail if n not in ("adaround",)]
    if options.get("adaround") and "adaround" not in order:
        if "place-qdq" not in order:
            raise UsageError("adaround needs a quantizing pipeline (one with place-qdq)",
                             "give a target, or add place-qdq to --pipeline")
        order.insert(order.index("place-qdq"), "adaround")
    return order


def detect_mode(model) -> str:
    """'import' for a Q/DQ model, 'static' for a float one; a QOperator or dynamically
    quantized model is a ModelError saying what it is and what qcompiler can do."""
    from qcompiler.formats.qdq_import import detect_form

    form = detect_form(model)
    if form.form == "qdq":
        return "import"
    if form.form == "float":
        return "static"
    raise ModelError(form.message, "see docs/advanced.md, 'Pre-quantized models'")


def prepare_build(model, names: Sequence[str], options: Dict, explicit: bool = False) -> Tuple[List[str], Dict]:
    """Pipeline and options for a build with the advanced options (model: path, ModelProto
    or None; used to detect an already quantized model when no mode is given)."""
    opts = prepare_options(options)
    mode = opts.get("mode")
    if (mode is None or mode == "auto") and model is not None:
        proto = _load(model)
        opts["mode"] = detect_mode(proto)
    elif mode == "auto":
        opts["mode"] = "static"
    return advanced_pipeline(names, opts, explicit=explicit), opts


def _load(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    from qcompiler.ir import read_model

    return read_model(model, lazy=True)  # the op types only: weights stay in their files


def needs_calibration(options: Dict) -> bool:
    return (options.get("mode") or "static") not in ("dynamic", "import")


def pipeline_note(names: Sequence[str], options: Dict) -> Optional[str]:
    mode = options.get("mode") or "static"
    if mode == "static":
        return None
    return f"mode {mode}: pipeline {', '.join(names)}"
