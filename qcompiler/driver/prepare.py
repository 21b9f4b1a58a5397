"""What `build` / `qcompiler build` call to honour the accuracy options.

    names, options, extra = prepare_build(model, target, names, calib, options)
    ... run the pipeline with `names` and `options` ...
    report["bitops"] = bitops_report(ir, plan, first_batch)      # every quantized build
    report.update(extra)                                         # mixed precision, overrides

Options read here (all optional; build(options=...) keys):
    overrides    path or dict of a per-layer override config (qcompiler.precision.overrides)
    min_sqnr     automatic mixed precision: output SQNR budget in dB
    max_drop     automatic mixed precision: metric drop budget (1 - cosine without metric)
    metric       callable metric(outputs_list, batches) -> float, or "module:function" /
                 "file.py:function"
    mp_eval_batches  calibration batches the mixed-precision search evaluates on (default 4)
    eval_data    evaluation data for the search instead (labelled, for a task metric): a
                 .npz path (model inputs + labels), a dict of arrays or a list of batches
                 (qcompiler.analysis.evaldata); `eval_batch_size` samples a batch (32)
    analysis     an earlier analysis of the same model and target (analysis.json path or
                 the dict analyze returned): the search takes its ranking from it
    data_free / equalize / bias_correction / int16_layers: pipeline edits (pipelines.py)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from qcompiler.errors import UsageError

from qcompiler.pipeline.edits import adjust_pipeline


#: options only the mixed-precision search reads (not passed to its variant builds)
SEARCH_ONLY = ("min_sqnr", "max_drop", "metric", "eval_data", "eval_batch_size", "analysis")


def load_metric(spec) -> Optional[Callable]:
    """A metric callable from a callable, "package.module:function" or "path/file.py:function"."""
    if spec is None or callable(spec):
        return spec
    mod, _, fn = str(spec).rpartition(":")
    if not mod or not fn:
        raise UsageError(f"cannot read --metric '{spec}'", "write module:function or file.py:function")
    try:
        if mod.endswith(".py") or "/" in mod:
            p = Path(mod)
            if not p.is_file():
                raise UsageError(f"metric file '{p}' does not exist", "check the --metric path")
            name = f"qcompiler_metric_{abs(hash(str(p.resolve())))}"
            s = importlib.util.spec_from_file_location(name, p)
            module = importlib.util.module_from_spec(s)
            sys.modules[name] = module
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot import the metric module '{mod}': {type(e).__name__}: {e}",
                         "check --metric module:function") from None
    f = getattr(module, fn, None)
    if not callable(f):
        raise UsageError(f"'{fn}' is not a function in '{mod}'", "check --metric module:function")
    return _checked_metric(f, str(spec))


def _checked_metric(f: Callable, spec: str) -> Callable:
    """The user's metric, whose failures and non-numbers are user errors naming it."""
    import functools
    import math
    import numbers

    hint = "a metric is metric(outputs_list, batches) -> float, higher is better"

    @functools.wraps(f)
    def metric(*args, **kwargs):
        try:
            value = f(*args, **kwargs)
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise UsageError(f"--metric '{spec}' failed: {type(e).__name__}: {e}", hint) from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise UsageError(f"--metric '{spec}' returned {value!r}, not a finite number", hint)
        return float(value)

    return metric


def prepare_build(model, target, names: Sequence[str], calib, options: Dict,
                  echo: Optional[Callable[[str], None]] = None) -> Tuple[List[str], Dict, Dict]:
    """Pipeline and options for a build with accuracy options; the extra report sections."""
    options = dict(options or {})
    extra: Dict = {}
    if options.get("data_free") and calib is not None:
        pass  # data-free ranges even when data is given: the user asked for it
    if options.get("overrides") is not None:
        from qcompiler.target import resolve_target
        from qcompiler.ir import load_ir

        from qcompiler.precision.overrides import load_overrides, resolve_overrides

        cfg = load_overrides(options["overrides"])
        tgt = resolve_target(target)
        resolved = resolve_overrides(cfg, load_ir(model), tgt)
        options["keep_float"] = list(options.get("keep_float", []) or []) + resolved["keep_float"]
        if resolved["int16_layers"]:
            options["int16_layers"] = resolved["int16_layers"]
            options["min_opset"] = max(int(options.get("min_opset", 13)), 21)
        extra["overrides"] = resolved["override_notes"]
    if options.get("min_sqnr") is not None or options.get("max_drop") is not None:
        if calib is None:
            raise UsageError("automatic mixed precision needs data to measure the error",
                             "pass --calib (a few batches are enough)")
        from qcompiler.precision.mixed_precision import format_mixed, mixed_precision

        metric = load_metric(options.get("metric"))
        search_opts = {k: v for k, v in options.items() if k not in SEARCH_ONLY}
        eval_data = None
        if options.get("eval_data") is not None:
            from qcompiler.analysis.evaldata import load_eval_data

            eval_data = load_eval_data(options["eval_data"], model, options.get("eval_batch_size"))
        rep = mixed_precision(model, target, calib, min_sqnr=options.get("min_sqnr"),
                              max_drop=options.get("max_drop"), metric=metric, options=search_opts,
                              eval_batches=int(options.get("mp_eval_batches", 4)), eval_data=eval_data,
                              sensitivity=options.get("analysis"))
        for k in ("eval_data", "analysis"):  # arrays and paths: not build options
            options.pop(k, None)
        options["keep_float"] = list(options.get("keep_float", []) or []) + rep["keep_float"]
        extra["mixed_precision"] = rep
        if echo:
            for line in format_mixed(rep).splitlines():
                echo(line)
    return adjust_pipeline(names, options), options, extra


def add_bitops(report: Dict, ir, feeds, model=None) -> None:
    """report["bitops"] and report["macs"] (the INT8 share) for a quantized build (call after
    the pipeline ran; `model`: the IR as exported, when it is)."""
    from qcompiler.analysis.bitops import bitops_report, mac_summary

    plan = ir.ann.plan
    if plan is None:
        return
    rep = bitops_report(ir, plan, feeds, model=model)
    report["bitops"] = rep
    report["macs"] = mac_summary(rep)
