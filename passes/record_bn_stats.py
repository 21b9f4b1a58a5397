"""record-bn-stats: remember what BatchNormalization knew about the data before fold-bn
folds it away.

An inference BN normalizes its input to zero mean and unit variance (with the running
statistics) and then applies gamma and beta, so on data like the training data its
output channel c is distributed about N(beta_c, gamma_c^2). After fold-bn that output is
the output of the conv (or Gemm / ConvTranspose) that absorbed the BN, so the pass keys
the statistics by that producer's node name:

    ir.ann.notes["bn_stats"][producer_name] = {"mean": beta (list), "std": |gamma| (list)}

Equalization rescales the channels (and updates these numbers), high-bias absorption
uses them, and the data-free calibration turns them into activation ranges
(mean +- k std, clipped at 0 after a Relu). Run it before fold-bn.
"""

from __future__ import annotations

import numpy as np

from qcompiler.pipeline.registry import Pass, register_pass

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@register_pass("record-bn-stats", requires={"canonical"}, provides={"bn-stats"})
class RecordBnStats(Pass):
    """Keep BatchNormalization gamma/beta (the output's std/mean) per producing conv, before fold-bn."""

    def run(self, ir, ctx) -> bool:
        stats = ir.ann.notes.setdefault("bn_stats", {})
        recorded = 0
        for bn in ir.graph.nodes:
            if bn.op != "BatchNormalization" or bn.domain not in ("", None) or bn.attrs.get("training_mode", 0):
                continue
            x = bn.inputs[0]
            p = ir.producer(x)
            if p is None or p.op not in PRODUCERS or len(x.outputs) != 1 or ir.is_graph_output(x):
                continue
            gamma = ir.const_value(bn.inputs[1])
            beta = ir.const_value(bn.inputs[2])
            if gamma is None or beta is None:
                continue
            stats[p.name] = {"bn": bn.name,
                             "mean": np.asarray(beta, np.float64).reshape(-1).tolist(),
                             "std": np.abs(np.asarray(gamma, np.float64)).reshape(-1).tolist()}
            recorded += 1
        ctx.pass_report(self.name).update(recorded=recorded)
        return False  # annotations only: the graph is unchanged
