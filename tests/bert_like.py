"""A BERT-style sentence encoder built with onnx.helper, for the transformer tests and
bench/bench_transformers.py (kept out of the installed package).

    model = bert_like(layers=2, mask="add", layernorm="op")
    feeds = padded_batches(n=64, seed=1)   # list of {input_ids, attention_mask, token_type_ids}

The graph is what a Hugging Face export of a sentence-transformers model holds: word,
position and token-type embeddings (Gather) -> LayerNorm; per layer Q/K/V MatMul + bias,
scores MatMul / sqrt(d), the additive attention mask (1 - mask) * float32 lowest
(`mask="add"`) or a masked fill Where(mask, scores, lowest) (`mask="where"`), Softmax,
context MatMul, output projection, residual Add, LayerNorm, GELU (Erf form) MLP, residual
Add, LayerNorm; then masked mean pooling and L2 normalisation. `layernorm="decomposed"`
writes LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, as older exports do.

Weights are random (np.random.default_rng(seed)) but shaped like a trained encoder's:
Q/K weights large enough that attention is peaked (not uniform), and a few hidden channels
with large LayerNorm gains, the outlier channels trained BERTs carry in their residual
stream. `weights=` takes a dict of real weights in the Hugging Face BERT naming instead.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LOWEST = float(np.finfo(np.float32).min)  # -3.4e38, what the exports add at padded positions


def random_weights(hidden=128, heads=4, layers=2, inter=512, vocab=1000, max_pos=64, seed=0,
                   outliers=2, qk=4.0, spike=2.0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def n(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    spikes = rng.choice(hidden, outliers, replace=False)  # the same channels in every layer

    def gamma(last=False):
        g = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        if not last:
            g[spikes] *= spike  # residual-stream outlier channels
        return g

    w = {"embeddings.word_embeddings.weight": n(vocab, hidden, std=0.5),
         "embeddings.position_embeddings.weight": n(max_pos, hidden, std=0.2),
         "embeddings.token_type_embeddings.weight": n(2, hidden, std=0.2),
         "embeddings.LayerNorm.weight": gamma(), "embeddings.LayerNorm.bias": n(hidden, std=0.05)}
    qk_std = qk / np.sqrt(hidden)  # peaked attention: scores of a few units
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name, std in (("query", qk_std), ("key", qk_std), ("value", 1.0 / np.sqrt(hidden))):
            w[p + f"attention.self.{name}.weight"] = n(hidden, hidden, std=std)  # stored {out, in}
            w[p + f"attention.self.{name}.bias"] = n(hidden, std=0.05)
        w[p + "attention.output.dense.weight"] = n(hidden, hidden, std=1.0 / np.sqrt(hidden))
        w[p + "attention.output.dense.bias"] = n(hidden, std=0.05)
        w[p + "attention.output.LayerNorm.weight"] = gamma()
        w[p + "attention.output.LayerNorm.bias"] = n(hidden, std=0.05)
        w[p + "intermediate.dense.weight"] = n(inter, hidden, std=1.0 / np.sqrt(hidden))
        w[p + "intermediate.dense.bias"] = n(inter, std=0.05)
        w[p + "output.dense.weight"] = n(hidden, inter, std=1.0 / np.sqrt(inter))
        w[p + "output.dense.bias"] = n(hidden, std=0.05)
        w[p + "output.LayerNorm.weight"] = gamma(last=i == layers - 1)
        w[p + "output.LayerNorm.bias"] = n(hidden, std=0.05)
    return w


class _G:
    """A tiny graph writer: unique names, initializers, nodes."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def const(self, name, value, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op, inputs, name, **attrs):
        self.k += 1
        out = f"{name}.out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def bert_like(layers: int = 2, hidden: int = 128, heads: int = 4, inter: int = 512, vocab: int = 1000,
              mask: str = "add", layernorm: str = "op", seed: int = 0,
              weights: Optional[Dict[str, np.ndarray]] = None, eps: float = 1e-12) -> onnx.ModelProto:
    """The encoder as an ONNX model (opset 17); inputs int64 [batch, seq], output
    `sentence_embedding` [batch, hidden]."""
    if mask not in ("add", "where"):
        raise ValueError("mask must be 'add' or 'where'")
    w = weights or random_weights(hidden, heads, layers, inter, vocab, seed=seed)
    hidden = w["embeddings.word_embeddings.weight"].shape[1]
    dh = hidden // heads
    g = _G()
    for name, value in w.items():
        if name.endswith(".weight") and w[name].ndim == 2 and "embeddings" not in name:
            g.const(name, np.ascontiguousarray(value.T))  # {in, out} for MatMul
        else:
            g.const(name, value)

    def layer_norm(x, p):
        if layernorm == "op":
            return g.op("LayerNormalization", [x, p + ".weight", p + ".bias"], p, axis=-1, epsilon=eps)
        mean = g.op("ReduceMean", [x, g.const(p + ".axes", [-1], np.int64)], p + ".mean")
        d = g.op("Sub", [x, mean], p + ".sub")
        sq = g.op("Pow", [d, g.const(p + ".two", 2.0)], p + ".pow")
        var = g.op("ReduceMean", [sq, p + ".axes"], p + ".var")
        std = g.op("Sqrt", [g.op("Add", [var, g.const(p + ".eps", eps)], p + ".add_eps")], p + ".sqrt")
        y = g.op("Div", [d, std], p + ".div")
        return g.op("Add", [g.op("Mul", [y, p + ".weight"], p + ".scale"), p + ".bias"], p + ".shift")

    def dense(x, p):
        return g.op("Add", [g.op("MatMul", [x, p + ".weight"], p + ".matmul"), p + ".bias"], p + ".bias_add")

    # embeddings: positions are the first `seq` rows of an arange, sliced by the input's length
    seq = g.op("Slice", [g.op("Shape", ["input_ids"], "shape"), g.const("one", [1], np.int64),
                         g.const("two", [2], np.int64)], "seq_len")
    max_pos = w["embeddings.position_embeddings.weight"].shape[0]
    pos_ids = g.op("Slice", [g.const("position_ids", np.arange(max_pos)[None], np.int64),
                             g.const("zero", [0], np.int64), seq, g.const("one_axis", [1], np.int64)], "position_slice")
    x = g.op("Add", [g.op("Gather", ["embeddings.word_embeddings.weight", "input_ids"], "word_gather"),
                     g.op("Gather", ["embeddings.token_type_embeddings.weight", "token_type_ids"], "type_gather")],
             "embeddings.add")
    x = g.op("Add", [x, g.op("Gather", ["embeddings.position_embeddings.weight", pos_ids], "pos_gather")],
             "embeddings.add_pos")
    x = layer_norm(x, "embeddings.LayerNorm")

    # the extended mask [batch, 1, 1, seq]
    m4 = g.op("Unsqueeze", ["attention_mask", g.const("axes12", [1, 2], np.int64)], "mask_unsqueeze")
    if mask == "add":
        mf = g.op("Cast", [m4], "mask_cast", to=TensorProto.FLOAT)
        inv = g.op("Sub", [g.const("one_f", 1.0), mf], "mask_invert")
        ext = g.op("Mul", [inv, g.const("lowest", LOWEST)], "mask_scale")
    else:
        ext = g.op("Cast", [m4], "mask_bool", to=TensorProto.BOOL)
    shape4 = g.const("shape_heads", [0, 0, heads, dh], np.int64)
    shape3 = g.const("shape_hidden", [0, 0, hidden], np.int64)
    scale = g.const("inv_sqrt_dh", 1.0 / np.sqrt(dh))
    n_layers = sum(1 for k in w if k.endswith("attention.self.query.weight"))
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        heads_of = {}
        for part, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            h = dense(x, p + f"attention.self.{part}")
            h = g.op("Reshape", [h, shape4], p + f"attention.self.{part}.reshape")
            heads_of[part] = g.op("Transpose", [h], p + f"attention.self.{part}.transpose", perm=perm)
        s = g.op("MatMul", [heads_of["query"], heads_of["key"]], p + "attention.self.scores")
        s = g.op("Mul", [s, scale], p + "attention.self.scale")
        if mask == "add":
            s = g.op("Add", [s, ext], p + "attention.self.mask_add")
        else:
            s = g.op("Where", [ext, s, g.const(p + "attention.self.fill", LOWEST)], p + "attention.self.mask_fill")
        probs = g.op("Softmax", [s], p + "attention.self.softmax", axis=-1)
        c = g.op("MatMul", [probs, heads_of["value"]], p + "attention.self.context")
        c = g.op("Transpose", [c], p + "attention.self.context.transpose", perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, shape3], p + "attention.self.context.reshape")
        a = dense(c, p + "attention.output.dense")
        x = layer_norm(g.op("Add", [a, x], p + "attention.output.residual"), p + "attention.output.LayerNorm")
        h = dense(x, p + "intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [h, g.const(p + "gelu.sqrt2", np.sqrt(2.0))], p + "gelu.div")],
                   p + "gelu.erf")
        gl = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, g.const(p + "gelu.one", 1.0)], p + "gelu.add")],
                               p + "gelu.mul"), g.const(p + "gelu.half", 0.5)], p + "gelu.half_mul")
        o = dense(gl, p + "output.dense")
        x = layer_norm(g.op("Add", [o, x], p + "output.residual"), p + "output.LayerNorm")

    # masked mean pooling and L2 normalisation
    m3 = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const("axis2", [2], np.int64)], "pool_unsqueeze")],
              "pool_cast", to=TensorProto.FLOAT)
    summed = g.op("ReduceSum", [g.op("Mul", [x, m3], "pool_mul"), g.const("axis1", [1], np.int64)], "pool_sum",
                  keepdims=0)
    count = g.op("Clip", [g.op("ReduceSum", [m3, "axis1"], "pool_count", keepdims=0), g.const("tiny", 1e-9)],
                 "pool_clip")
    mean = g.op("Div", [summed, count], "pool_mean")
    norm = g.op("Clip", [g.op("ReduceL2", [mean, g.const("axis_last", [-1], np.int64)], "l2", keepdims=1),
                         g.const("tiny_norm", 1e-12)], "l2_clip")
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="l2_div"))

    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(g.nodes, "bert_like", ints, [out], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def padded_batches(n: int = 64, batch: int = 8, seq: int = 32, vocab: int = 1000, seed: int = 0,
                   min_len: int = 4) -> List[Dict[str, np.ndarray]]:
    """`n` synthetic sentences in batches, each padded to `seq` tokens: [CLS]=1 ... [SEP]=2,
    then pad 0 with attention_mask 0. Token frequencies follow a Zipf law, as words do.
    Sentences come in pairs (rows 2k, 2k+1): the second is the first with a quarter of its
    tokens replaced, so each sentence's nearest neighbour is known."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab - 2, dtype=np.float64)
    freq = 1.0 / ranks
    freq /= freq.sum()
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        ids = np.zeros((b, seq), np.int64)
        mask = np.zeros((b, seq), np.int64)
        for r in range(b):
            if r % 2 == 0:
                length = int(rng.integers(min_len, seq - 1))
                words = 3 + rng.choice(len(ranks), size=length, p=freq)
            else:
                words = words.copy()
                swap = rng.choice(length, size=max(1, length // 4), replace=False)
                words[swap] = 3 + rng.choice(len(ranks), size=swap.size, p=freq)
            ids[r, 0] = 1
            ids[r, 1:length + 1] = words
            ids[r, length + 1] = 2
            mask[r, :length + 2] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


def embedding_agreement(ref: np.ndarray, got: np.ndarray) -> Dict[str, float]:
    """Mean cosine between matching rows, and the share of rows whose nearest neighbour
    (by cosine, among the other rows) is the same under both embeddings."""
    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    r, q = unit(np.asarray(ref, np.float64)), unit(np.asarray(got, np.float64))
    cos = float(np.mean(np.sum(r * q, axis=1)))
    sr, sq = r @ r.T, q @ q.T
    np.fill_diagonal(sr, -np.inf)
    np.fill_diagonal(sq, -np.inf)
    nn = float(np.mean(sr.argmax(1) == sq.argmax(1)))
    return {"cosine": cos, "nn_agreement": nn}
