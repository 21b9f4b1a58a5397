"""canonicalize: opset >= 13, shape inference, constant folding, no Identity/Dropout/Constant nodes,
division by a float constant rewritten as multiplication by its reciprocal (Mul has integer
kernels on every target; Div has none, so `x * relu6(x + 3) / 6` would leave a float island)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qcompiler.errors import ModelError
from qcompiler.ir import io as qio
from qcompiler.ir.io import FileValues, ir_skeleton, ir_to_model, model_size, model_to_ir
from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass

TARGET_OPSET = 13
FOLD_SIZE_LIMIT = 16 << 20  # do not materialise Tile/Expand results bigger than this
NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}  # keep imported Q/DQ weights


@register_pass("canonicalize", provides={"canonical", "shapes"})
class Canonicalize(Pass):
    """Upgrade to opset >= 13, infer shapes, fold constants, drop Identity/Dropout, Constant nodes to initializers."""

    config = {"min_opset": Option(int, TARGET_OPSET, "upgrade the model to at least this opset")}

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        min_opset = max(self.settings(ctx).min_opset, _target_opset(ctx.target))
        changed = False
        before = ir.opset
        # Opset upgrade and shape inference see the model without its weight data (a few KB
        # instead of a copy of every weight; no 2 GB limit), and the weights go back onto the
        # re-imported graph untouched.
        upgrade = ir.opset < min_opset
        model, weights = _skeleton(ir)
        if upgrade:
            model = _upgrade(model, min_opset)
            changed = True
        model = _infer_shapes(model, ctx)
        graph = model_to_ir(model).graph
        if not _reattach(graph, weights):  # the upgrade rewrote a weight: redo it with the data
            model = ir_to_model(ir)
            if upgrade:
                model = _upgrade(model, min_opset)
            model = _infer_shapes(model, ctx)
            graph = model_to_ir(model).graph
        annotations = ir.ann
        ir.reload(graph, model_meta=ir.model_meta | {
            "opset_imports": {imp.domain: imp.version for imp in model.opset_import},
            "ir_version": model.ir_version})
        ir.ann = annotations
        rep["opset"] = [before, ir.opset]

        n = _constants_to_initializers(ir)
        rep["constant_nodes_to_initializers"] = n
        changed |= n > 0
        n = _remove_identities(ir)
        rep["identity_dropout_removed"] = n
        changed |= n > 0
        folded = _fold_constants(ir, ctx.log)
        rep["constants_folded"] = folded
        changed |= folded > 0
        n = _div_to_mul(ir)
        rep["div_by_constant_to_mul"] = n
        changed |= n > 0
        return changed


def _upgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    if model.ir_version < 4:
        # IR v3 lists initializers as graph inputs; the IR (and this skeleton) does not, and
        # the converter then reads them as undefined. From IR v4 on, unlisted is right.
        model.ir_version = 4
    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:
        raise ModelError(f"cannot upgrade the model from opset {model.opset_import[0].version} to {opset}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                         "re-export the model at opset 13 or later") from None


def _infer_shapes(model: onnx.ModelProto, ctx) -> onnx.ModelProto:
    if model_size(model) > qio.TWO_GB:  # read here: tests lower the limit
        ctx.log.warning("model is over 2 GB even without its weights: shape inference skipped; "
                        "shapes come from the model")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:
        ctx.log.warning("shape inference failed (%s); continuing with the model's own shapes", e)
        return model


_WEIGHTS = "qcompiler-canonicalize-weights"  # the external location of the skeleton's weights (never read)


def _skeleton(ir):
    """The IR as a ModelProto whose large constants hold no data, and those constants by name."""
    model, layout = ir_skeleton(ir, _WEIGHTS)
    tensors = ir.graph.tensors()
    return model, {name: tensors[name] for _, _, name, _ in layout.entries}


def _reattach(graph, weights) -> bool:
    """Give the re-imported constants that point at the skeleton's weights their values back
    (same object, no copy). False when one of them changed type or shape, or is missing."""
    found = {}
    for t in graph.tensors().values():
        if not isinstance(t, gs.Constant) or not isinstance(t._values, gs.ir.tensor.LazyValues):
            continue
        proto = t._values.tensor
        if not any(e.key == "location" and e.value == _WEIGHTS for e in proto.external_data):
            continue
        old = weights.get(t.name)
        if old is None or tuple(old.shape) != tuple(t.shape) or np.dtype(old.dtype) != np.dtype(t.dtype):
            return False
        found[t.name] = (t, old)
    if len(found) != len(weights) and any(_still_used(graph, n) for n in weights if n not in found):
        return False
    for t, old in found.values():
        t._values, t.data_location = old._values, old.data_location
    return True


def _still_used(graph, name) -> bool:
    return any(t.name == name for n in graph.nodes for t in n.inputs)


def _constants_to_initializers(ir) -> int:
    count = 0
    for node in list(ir.graph.nodes):
        if node.op != "Constant" or node.domain not in ("", None):
            continue
        value = _constant_value(node)
        if value is None:
            continue
        out = node.outputs[0]
        if ir.is_graph_output(out):
            continue
        name = out.name  # the initializer keeps the tensor's name
        const = ir.constant(name + "_value", value)
        ir.replace_uses(out, const)
        ir.remove_node(node)
        ir.rename_tensor(out, ir.fresh_name(name + "_detached"))
        ir.rename_tensor(const, name)
        count += 1
    return count


def _constant_value(node):
    a = node.attrs
    if "value" in a:
        v = a["value"]
        return np.asarray(v.values if isinstance(v, gs.Constant) else v)
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.array(a[key], dtype=dtype)
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.array(list(a[key]), dtype=dtype)
    return None  # sparse / string constants stay as they are


def _remove_identities(ir) -> int:
    count = 0
    for node in list(ir.graph.nodes):
        if node.op == "Identity" and node.domain in ("", None):
            pass
        elif node.op == "Dropout" and node.domain in ("", None):
            mask_used = len(node.outputs) > 1 and (len(node.outputs[1].outputs) or ir.is_graph_output(node.outputs[1]))
            training = len(node.inputs) > 2 and ir.const_value(node.inputs[2])
            if mask_used or (training is not None and bool(np.asarray(training).any())):
                continue
        else:
            continue
        src, out = node.inputs[0], node.outputs[0]
        if ir.is_graph_output(out) and (ir.is_graph_input(src) or ir.is_graph_output(src) or ir.is_const(src)):
            continue  # the graph output must stay a distinct, produced tensor
        if ir.is_graph_output(out) and len(src.outputs) > 1:
            continue  # renaming src would rename a tensor other nodes also read under its own name
        ir.bypass(node)
        count += 1
    return count


def _div_to_mul(ir) -> int:
    """x / c -> x * (1 / c) for float constants c whose reciprocal is finite (differs by <= 1 ulp)."""
    count = 0
    for node in list(ir.graph.nodes):
        if node.op != "Div" or node.domain not in ("", None) or len(node.inputs) != 2:
            continue
        x, c = node.inputs
        value = ir.const_value(c)
        if value is None or ir.const_value(x) is not None or value.dtype not in (np.float32, np.float64):
            continue
        readers = [r for t in node.outputs for r in ir.consumers(t)]
        if readers and all(r.op == "Erf" for r in readers):
            continue  # the x / sqrt(2) of a GELU: Erf is float anyway, and ONNX Runtime fuses only the Div form
        with np.errstate(divide="ignore", over="ignore"):
            recip = (1.0 / value.astype(np.float64)).astype(value.dtype)
        if not np.all(np.isfinite(value)) or not np.all(np.isfinite(recip)) or np.any(value == 0):
            continue
        ir.replace_node(node, "Mul", [x, ir.constant(f"{c.name}_reciprocal", recip)])
        count += 1
    return count


def _not_foldable(node) -> bool:
    """Q/DQ stay; ops of other domains (custom ops) are not ONNX Runtime's to run."""
    return node.op in NEVER_FOLD or node.domain not in ("", "ai.onnx", None)


def _too_big(node) -> bool:
    """A node whose inferred output is over FOLD_SIZE_LIMIT (a ConstantOfShape of 2^58
    elements, say) is not evaluated at all: ONNX Runtime would fail to allocate it, and the
    partitioned retry would try again for every part of the graph."""
    for t in node.outputs:
        shape = getattr(t, "shape", None)
        if shape and all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
            try:
                itemsize = np.dtype(t.dtype).itemsize
            except TypeError:
                itemsize = 4
            if int(np.prod([int(d) for d in shape], dtype=object)) * itemsize > FOLD_SIZE_LIMIT:
                return True
    return False


def _nothing_to_fold(ir) -> bool:
    """No node can fold: none reads only constants, and there is no Shape/Size (shape folding),
    Cast (cast elision) or subgraph node. gs.fold_constants copies the whole graph before it
    looks, which dominates this pass on large graphs that have nothing to fold."""
    for node in ir.graph.nodes:
        if node.op in ("Shape", "Size", "Cast") or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            return False
        if not _not_foldable(node) and all(isinstance(t, gs.Constant) or not t.name for t in node.inputs):
            return False
    return True


def _read_file_values(ir) -> None:
    """Constants that a foldable node reads get their values now if they are still in the
    model's external data file: gs folds through ONNX Runtime with an exported subgraph, which
    must hold the data itself."""
    for node in ir.graph.nodes:
        if _not_foldable(node) or not all(isinstance(t, gs.Constant) or not t.name for t in node.inputs):
            continue
        for t in node.inputs:
            if isinstance(t, gs.Constant) and isinstance(t._values, FileValues):
                t.values  # noqa: B018 (reads the file once; the constant keeps the array)


def _fold_constants(ir, log) -> int:
    if _nothing_to_fold(ir):
        return 0
    before = sum(1 for n in ir.graph.nodes)
    _read_file_values(ir)
    ir.toposort()  # gs folding needs sorted nodes; this is the one pass that folds
    level = gs.logger.G_LOGGER.severity
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)

    def exclude(node) -> bool:
        return _not_foldable(node) or _too_big(node)

    def fold(partitioning, error_ok):
        ir.graph.fold_constants(fold_shapes=True, partitioning=partitioning, error_ok=error_ok,
                                size_threshold=FOLD_SIZE_LIMIT, should_exclude_node=exclude)

    import onnxruntime as ort

    # ONNX Runtime logs each failed evaluation in colour on stderr; the one warning below says it
    ort.set_default_logger_severity(4)
    try:
        try:
            fold(None, False)  # one ONNX Runtime run over all foldable nodes
        except Exception:
            # some node cannot run: fold part by part ("basic" copies the graph per part; it
            # cost half of this pass when it always ran)
            try:
                fold("basic", True)
            except Exception:  # folding is an optimization: the graph is still valid as it is
                log.warning("constant folding skipped: ONNX Runtime cannot evaluate a subgraph of constants "
                            "in this model (the model will likely fail at run time too)")
    finally:
        gs.logger.G_LOGGER.severity = level
        ort.set_default_logger_severity(3)  # errors only, as qcompiler's own sessions log
    # Folded values are now Constants; their producer nodes are dead and the manager drops them.
    from qcompiler.ir.toposort import live_nodes

    live = live_nodes(ir.graph)
    return before - sum(1 for n in ir.graph.nodes if id(n) in live)


def _target_opset(target) -> int:
    """The opset a target's own types need: QuantizeLinear takes 4- and 16-bit types from
    opset 21 (a custom target may declare `activation int16` or `weight uint4`)."""
    if target is None or not hasattr(target, "activation"):
        return TARGET_OPSET
    from qcompiler.precision.dtypes import OPSET_FOR_DTYPE

    schemes = [target.activation, target.weight, target.bias, *getattr(target, "overrides", ())]
    return max([OPSET_FOR_DTYPE.get(s.dtype, TARGET_OPSET) for s in schemes if s is not None] or [TARGET_OPSET])
