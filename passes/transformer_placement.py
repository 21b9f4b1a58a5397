"""transformer-placement: INT8 placement for models with attention blocks.

Only when the graph has attention (a Softmax over the product of two activations) does
this pass record, for insert-observers and calibrate (qcompiler.quant.transformer says why,
with the measurements):

- `notes["forced_float"]`: elementwise ops (bias/residual Add, GELU Mul, Softmax, Where)
  stay float, except next to a convolution (the CNN part of a hybrid model);
- `notes["float_outputs"]`: MatMul/Gemm kernels whose output no integer kernel reads keep a
  float output, where the target's placement allows it (`matmul_float_output true`);
- `notes["calib_methods"]`: least squared error ranges (mse) for the MatMul/Gemm activation
  inputs, unless the user chose a method (`--method`).

A model without attention (every CNN) is left exactly as it was.
"""

from __future__ import annotations

from qcompiler.pipeline.options import METHOD_OPTION
from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.transformer import attention_softmaxes, elementwise_float, matmul_inputs


@register_pass("transformer-placement", requires={"canonical"}, provides={"transformer-placed"})
class TransformerPlacement(Pass):
    """Keep a transformer's elementwise ops and MatMul outputs float, MatMul inputs by mse."""

    config = {"calib_method": METHOD_OPTION}

    def run(self, ir, ctx) -> bool:
        rep = ctx.pass_report(self.name)
        attention = attention_softmaxes(ir)
        rep["attention_blocks"] = len(attention)
        if not attention:
            return False
        forced = elementwise_float(ir)
        table = ir.ann.notes.setdefault("forced_float", {})
        for name, why in forced.items():
            table.setdefault(name, why)  # the attention-mask pass's reason is the more specific
        if ctx.target is not None and ctx.target.placement.matmul_float_output:
            ir.ann.notes["float_outputs"] = sorted(n.name for n in ir.graph.nodes if n.op in ("MatMul", "Gemm"))
        if not self.settings(ctx).calib_method:
            ir.ann.notes["calib_methods"] = {name: "mse" for name in matmul_inputs(ir)}
        rep.update(float_elementwise=len(forced), mse_tensors=len(ir.ann.notes.get("calib_methods", {})),
                   float_outputs=bool(ir.ann.notes.get("float_outputs")))
        return False  # annotations only: the graph is unchanged
