"""A custom pass: remove multiplications by one, and count the convolutions.

    qcompiler build model.onnx --plugin examples/plugins/count_convs.py \
        --add-pass count-convs:after=canonicalize --dump-dir dumps/
"""

from qcompiler import Pass, register_pass


@register_pass("count-convs", requires={"canonical"})
class CountConvs(Pass):
    """Remove x * 1 (a scalar constant one); count Conv nodes."""

    def run(self, ir, ctx) -> bool:
        removed = 0
        for mul in [n for n in ir.graph.nodes if n.op == "Mul"]:
            for i in (0, 1):
                one, x = ir.const_value(mul.inputs[i]), mul.inputs[1 - i]
                if (one is None or one.size != 1 or one.reshape(-1)[0] != 1
                        or x.shape is None or one.ndim > len(x.shape)  # x * 1 must keep x's shape
                        or ir.is_graph_output(mul.outputs[0])):        # and the output its name
                    continue
                ir.bypass(mul, in_index=1 - i)  # readers of the product now read x
                removed += 1
                break
        convs = sum(1 for n in ir.graph.nodes if n.op in ("Conv", "ConvTranspose"))
        ctx.pass_report(self.name).update(convs=convs, mul_by_one_removed=removed)
        return removed > 0  # the manager drops dead nodes, sorts and verifies after us
