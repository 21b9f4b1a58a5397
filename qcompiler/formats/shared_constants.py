"""One initializer per distinct small constant in an exported model.

place-qdq gives every Q/DQ pair, weight and bias its own scale and zero point, so a
20,000-node model carries tens of thousands of tiny initializers, most of them equal (the
zero points above all). ONNX Runtime's session creation grows faster than linearly in the
number of initializers (name look-ups, unused-initializer clean-up, its own
ConstantSharing pass), so the export lets nodes read one shared initializer per value:
the computation is the same, only input names change.
"""

from __future__ import annotations

from typing import Dict, Set

import onnx

#: constants up to this many bytes of data are shared (scales, zero points, small vectors)
SHARE_MAX_BYTES = 4096


def share_small_constants(model: onnx.ModelProto, max_bytes: int = SHARE_MAX_BYTES) -> int:
    """Make the nodes of `model`'s main graph read one initializer per distinct value (type,
    shape and data) of at most `max_bytes`; drop the others. In place; returns how many
    initializers were dropped. Initializers that are graph inputs or outputs, that a
    subgraph reads, or whose data lives in a file keep their own name."""
    g = model.graph
    pinned = {i.name for i in g.input} | {o.name for o in g.output} | _subgraph_reads(g)
    keeper: Dict[bytes, str] = {}
    alias: Dict[str, str] = {}
    for t in g.initializer:
        if t.name in pinned or t.data_location == onnx.TensorProto.EXTERNAL or _data_bytes(t) > max_bytes:
            continue
        key = _value_key(t)
        first = keeper.setdefault(key, t.name)
        if first != t.name:
            alias[t.name] = first
    if not alias:
        return 0
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    kept = [t for t in g.initializer if t.name not in alias]
    del g.initializer[:]
    g.initializer.extend(kept)
    infos = [vi for vi in g.value_info if vi.name not in alias]
    if len(infos) != len(g.value_info):
        del g.value_info[:]
        g.value_info.extend(infos)
    return len(alias)


def _value_key(t: onnx.TensorProto) -> bytes:
    """The tensor without its name and doc string, serialized: equal keys, equal values."""
    c = onnx.TensorProto()
    c.CopyFrom(t)
    c.ClearField("name")
    c.ClearField("doc_string")
    return c.SerializeToString(deterministic=True)


def _data_bytes(t: onnx.TensorProto) -> int:
    """The tensor's serialized size (data, shape and name): a cheap upper bound of its data."""
    return t.ByteSize()


def _subgraph_reads(g: onnx.GraphProto) -> Set[str]:
    """Every name a node inside an If/Loop/Scan body reads (outer-scope values included)."""
    names: Set[str] = set()
    for node in g.node:
        for a in node.attribute:
            subs = ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                    list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else [])
            for sub in subs:
                for n in sub.node:
                    names.update(n.input)
                names |= _subgraph_reads(sub)
    return names
