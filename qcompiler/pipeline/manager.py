"""Pipeline building (validated, never reordered) and the pass manager.

After every pass the manager - not the pass - removes dead nodes, sorts and verifies
the IR, times the pass, and hands the result to the instruments (dumps, progress).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Sequence

from ..errors import PassError, PipelineError, QCompilerError, UsageError
from .registry import Pass, get_pass

log = logging.getLogger("qcompiler")


@dataclass
class Context:
    """What a pass may read besides the IR. Passes write results to `report` (and never
    read it to decide anything); a pass reads its options with `Pass.settings(ctx)`."""

    target: Any = None
    options: Dict[str, Any] = field(default_factory=dict)  # build-wide options
    calib: Any = None  # a callable returning a fresh iterator of input batches, or None
    report: Dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = log
    # what the passes after the running one want (Pass.wants), set by the manager
    wanted_later: FrozenSet[str] = frozenset()

    def option(self, key: str, default=None):
        """A build-wide option (the driver's own: emit, evaluate...; passes use settings)."""
        return self.options.get(key, default)

    def pass_report(self, name: str) -> Dict[str, Any]:
        return self.report.setdefault("passes", {}).setdefault(name, {})

    def require_calibration(self, who: str):
        """The calibration source (a callable returning a fresh iterator of input batches),
        or a one-line error naming the pass that needs it."""
        if self.calib is None:
            raise PipelineError(f"pass '{who}' needs calibration data",
                                "pass --calib PATH (a .npy/.npz file or folder)")
        return self.calib


def parse_insertion(spec: str):
    """'my-pass:after=fold-bn' or 'my-pass:before=place-qdq' or 'my-pass' (append)."""
    name, _, where = spec.partition(":")
    if not where:
        return name.strip(), "end", None
    key, _, anchor = where.partition("=")
    key = key.strip()
    if key not in ("after", "before") or not anchor.strip():
        raise PipelineError(f"cannot read --add-pass '{spec}'", "write NAME, NAME:after=PASS or NAME:before=PASS")
    return name.strip(), key, anchor.strip()


def build_pipeline(names: Sequence[str], add: Sequence[str] = (), options: Optional[dict] = None) -> List[Pass]:
    order = [n.strip() for n in names if n.strip()]
    for spec in add:
        name, where, anchor = parse_insertion(spec)
        if where == "end":
            order.append(name)
            continue
        if anchor not in order:
            raise PipelineError(f"--add-pass '{spec}': '{anchor}' is not in the pipeline",
                                "pipeline: " + ", ".join(order))
        i = order.index(anchor)
        order.insert(i + 1 if where == "after" else i, name)
    if not order:
        raise PipelineError("the pipeline is empty", "give at least one pass with --pipeline")
    classes = [get_pass(n) for n in order]
    provided: Dict[str, str] = {}
    for cls in classes:
        missing = sorted(set(cls.requires) - set(provided))
        if missing:
            fact = missing[0]
            providers = [c.name for c in _providers_of(fact)]
            where = (f"'{providers[0]}' provides it: put it before '{cls.name}'" if providers
                     else "no known pass provides it")
            raise PipelineError(
                f"pass '{cls.name}' requires '{fact}', which no earlier pass in the pipeline provides", where)
        for fact in cls.provides:
            provided.setdefault(fact, cls.name)
    opts = options or {}
    stray = sorted(set(opts) - set(order))
    if stray:
        raise UsageError(f"pass options are given for '{stray[0]}', which is not in the pipeline",
                         "pipeline: " + ", ".join(order))
    passes = [cls(**opts.get(cls.name, {})) for cls in classes]
    for p in passes:
        p.settings(None)  # unknown options and wrong types of the pass's own options
    return passes


def _providers_of(fact: str):
    from .registry import all_passes

    return [c for c in all_passes().values() if fact in c.provides]


class PassManager:
    def __init__(self, pipeline: Sequence[Pass], instruments: Sequence[Any] = (), keep_going: bool = False):
        self.pipeline = list(pipeline)
        self.instruments = list(instruments)
        self.keep_going = keep_going
        self.timings: List[Dict[str, Any]] = []

    def run(self, ir, ctx: Context):
        for p in self.pipeline:  # every option checked before the first pass runs
            p.settings(ctx)
        for inst in self.instruments:
            inst.start(ir, self.pipeline)
        for index, p in enumerate(self.pipeline, 1):
            ctx.wanted_later = frozenset().union(*(later.wants for later in self.pipeline[index:]))
            snapshot = _snapshot(ir) if self.keep_going else None
            t0 = time.perf_counter()
            try:
                changed = bool(p.run(ir, ctx))
                removed = ir.cleanup()
                ir.toposort()  # raises on a cycle
                ir.verify(sorted_already=True)
            except (Exception, SystemExit) as e:  # every failure is named after its pass; sys.exit() in a plugin too
                err = _as_pass_error(p, e)
                for inst in self.instruments:
                    inst.failed(index, p, err)
                needed = self._needed_later(index, p)
                if self.keep_going and needed:  # skipping it would only fail later, less clearly
                    later, fact = needed
                    code = err.exit_code
                    err = PassError(err.message, f"--keep-going cannot skip it: '{later}' needs '{fact}' from it; "
                                    + (err.hint or "fix the cause"))
                    err.exit_code = code
                if self.keep_going and snapshot is not None and not needed:
                    ir.__dict__.update(snapshot.__dict__)
                    ctx.report.setdefault("skipped_passes", []).append({"pass": p.name, "error": str(err)})
                    ctx.log.warning("%s (skipped: --keep-going)", err)
                    continue
                raise err from e
            dt = time.perf_counter() - t0
            entry = {"index": index, "pass": p.name, "seconds": round(dt, 6), "changed": changed,
                     "dead_nodes_removed": removed, "nodes": len(ir.graph.nodes)}
            self.timings.append(entry)
            for inst in self.instruments:
                inst.after(index, p, ir, entry)
        for inst in self.instruments:
            inst.finish(ir, self.timings)
        ctx.report["pass_timings"] = self.timings
        return ir

    def _needed_later(self, index: int, p):
        """(a later pass, the fact) when a pass after the index-th one requires what `p` provides."""
        for later in self.pipeline[index:]:
            for fact in sorted(set(later.requires) & set(p.provides)):
                return later.name, fact
        return None


def _snapshot(ir):
    """A copy of the IR to restore after a failed pass (--keep-going).

    copy.deepcopy cannot copy a gs.Graph (its __getattr__ recurses while the copy is
    half built); gs's own Graph.copy() copies nodes and tensors, sharing weight arrays,
    which passes replace rather than edit in place.
    """
    snap = copy.copy(ir)
    snap.graph = ir.graph.copy()
    snap.ann = copy.deepcopy(ir.ann)
    snap.model_meta = copy.deepcopy(ir.model_meta)
    snap._names = set(ir._names)
    snap._counter = dict(ir._counter)
    return snap


def _as_pass_error(p: Pass, e: Exception) -> PassError:
    if isinstance(e, QCompilerError):
        msg = e.message if e.message.startswith(f"pass '{p.name}'") else f"pass '{p.name}': {e.message}"
        err = PassError(msg, e.hint)
        err.exit_code = e.exit_code
        return err
    if isinstance(e, SystemExit):
        return PassError(f"pass '{p.name}' called sys.exit({e.code!r})", "a pass must raise an exception instead of exiting")
    return PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}",
                     "re-run with --debug for the traceback; the dump dir holds the last good IR")
