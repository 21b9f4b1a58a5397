"""quantize-gather: store large embedding tables as int8 and dequantize only the rows read.

Gather(table, ids) over a constant float32 table {V, D} (word embeddings: MiniLM's is
30522 x 384, 47 MB) becomes

    Gather(table_q int8, ids) -> Cast(float) -> Mul(Gather(row_scales {V, 1}, ids))

with one symmetric scale per row: the file holds a quarter of the bytes, and each run
dequantizes the B x S rows it reads, not the table. Per row, because rows differ in scale
(frequent tokens are larger) where columns do not: on MiniLM a per-column DequantizeLinear
kept 0.938 nearest-neighbour agreement, per row 0.949 (float table 0.957; cosine 0.9979
in all three). ONNX's DequantizeLinear has no per-row form after a Gather, hence Cast + Mul.

Only tables of at least `gather_min_elements` values (default 65536), gathered on axis 0
by non-constant indices; smaller tables (token types, positions of short models) are not
worth the nodes. Runs after place-qdq and fold-requant: the table is not an activation of
the quantization plan, and nothing after it plans again.
"""

from __future__ import annotations

import numpy as np

from qcompiler.pipeline.options import Option
from qcompiler.pipeline.registry import Pass, register_pass


@register_pass("quantize-gather", requires={"canonical"}, provides={"gather-quantized"})
class QuantizeGather(Pass):
    """Large constant Gather tables become int8 (per row); the rows read are scaled back to float."""

    config = {"gather_min_elements": Option(int, 65536, "only tables with at least this many values")}

    def run(self, ir, ctx) -> bool:
        limit = self.settings(ctx).gather_min_elements
        done, saved = [], 0
        for node in list(ir.graph.nodes):
            table = _table(ir, node, limit)
            if table is None:
                continue
            amax = np.abs(table).max(axis=1, keepdims=True)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
            out = node.outputs[0]
            ids = node.inputs[1]
            gather = ir.add_node("Gather", [ir.constant(node.inputs[0].name + "_int8", q), ids],
                                 attrs=dict(node.attrs), name=node.name + "_int8", out_dtype=np.int8)
            rows = ir.add_node("Gather", [ir.constant(node.name + "_row_scales", scale), ids],
                               attrs=dict(node.attrs), name=node.name + "_row_scales", out_dtype=np.float32)
            cast = ir.add_node("Cast", [gather.outputs[0]], attrs={"to": 1}, name=node.name + "_cast",
                               out_dtype=np.float32)
            dq = ir.add_node("Mul", [cast.outputs[0], rows.outputs[0]], name=node.name + "_dequantize",
                             out_dtype=out.dtype, out_shape=out.shape)
            ir.replace_uses(out, dq.outputs[0])
            ir.remove_node(node)
            done.append(node.name)
            saved += table.nbytes - q.nbytes - scale.nbytes
        ctx.pass_report(self.name).update(tables=done, bytes_saved=int(saved))
        return bool(done)


def _table(ir, node, limit: int):
    if node.op != "Gather" or len(node.inputs) != 2 or node.attrs.get("axis", 0) != 0:
        return None
    data, ids = node.inputs
    if not ir.is_const(data) or ir.is_const(ids):
        return None
    value = ir.const_value(data)
    if value is None or value.dtype != np.float32 or value.ndim != 2 or value.size < limit:
        return None
    if not np.isfinite(value).all():
        return None
    return value
