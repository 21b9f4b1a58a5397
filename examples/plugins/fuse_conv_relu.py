"""A custom pass with the rewrite API: Conv -> Relu as one ONNX Runtime FusedConv node.

    qcompiler build model.onnx --plugin examples/plugins/fuse_conv_relu.py \
        --pipeline canonicalize,fold-bn,fuse-conv-relu
"""

from qcompiler.rewrite import register_rewrite


@register_rewrite("fuse-conv-relu", "Conv(x, w:const, b?:const) -> Relu")
def fuse_conv_relu(b, m):
    """Conv + Relu as com.microsoft FusedConv (an FP32 pipeline: the INT8 passes know no FusedConv)."""
    conv = m["Conv"]
    return b.op("FusedConv", *conv.inputs, domain="com.microsoft", activation="Relu", **conv.attrs)
