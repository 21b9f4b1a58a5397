"""attention-mask: keep the attention mask's arithmetic float.

The (1 - mask) * lowest bias, the masked-fill Where and the scores they touch hold values
near -3.4e38; quantizing any of them rounds every attention score to zero
(qcompiler.quant.attention_mask says how they are found). This pass records those nodes in
`ir.ann.notes["forced_float"]`; insert-observers then plans no kernel over them, so the
Softmax reads exact float scores and its [0, 1] output is quantized for the next MatMul.
A model without such arithmetic (every CNN) is left as it was.
"""

from __future__ import annotations

from qcompiler.pipeline.registry import Pass, register_pass
from qcompiler.quant.attention_mask import mask_nodes, mask_tensors


@register_pass("attention-mask", requires={"canonical"}, provides={"mask-marked"})
class AttentionMask(Pass):
    """Find attention-mask arithmetic (huge negative fills) and keep it float."""

    def run(self, ir, ctx) -> bool:
        huge = mask_tensors(ir)
        reasons = mask_nodes(ir, huge)
        ir.ann.notes.setdefault("forced_float", {}).update(reasons)
        ctx.pass_report(self.name).update(mask_tensors=len(huge), float_nodes=sorted(reasons))
        return False  # annotations only: the graph is unchanged
