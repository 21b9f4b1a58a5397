"""The vocabularies a target file may use, and nearest-spelling suggestions.

Every name in a target file is checked against one of these sets at load time, so a
typo fails when the file is read, not halfway through a build.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Iterable

# dtype name -> (bits, signed)
DTYPES: dict[str, tuple[int, bool]] = {
    "int4": (4, True),
    "uint4": (4, False),
    "int8": (8, True),
    "uint8": (8, False),
    "int16": (16, True),
    "uint16": (16, False),
    "int32": (32, True),
}

ROLES = ("activation", "weight", "bias")

# dtypes each role may use
ROLE_DTYPES: dict[str, tuple[str, ...]] = {
    "activation": ("int4", "uint4", "int8", "uint8", "int16", "uint16"),
    "weight": ("int4", "uint4", "int8", "uint8", "int16", "uint16"),
    "bias": ("int16", "int32"),
}

# scheme options written after the dtype
SCHEME_FLAGS = ("symmetric", "asymmetric", "per_tensor", "per_channel", "narrow", "reduce_range",
                "pair_safe")

ROUNDING_MODES = ("half_away_from_zero", "half_to_even", "single_rounding")
# activation calibration methods a target may make its default (`calibration mse`)
CALIBRATION_METHODS = ("minmax", "moving_average", "percentile", "entropy", "mse")

REQUANT_STYLES = ("fixed_point", "float_scale")
FIXED_POINT_FORMATS = ("q31", "q15")

ACCUMULATORS = ("int16", "int32")
# instruction-set extensions the C code generator has kernels for (isa statement)
ISAS = ("avx2", "avx512_vnni", "neon", "dotprod")

LAYOUTS = ("NCHW", "NHWC", "NCHW44", "NCHW44_DOT", "NC4HW4", "NC32HW32")

# constraint variables, with the words the matcher uses in its reasons
CONSTRAINT_VARS: dict[str, str] = {
    "ic": "input channels",
    "oc": "output channels",
    "group": "group",
    "kernel": "kernel",
    "stride": "stride",
    "dilation": "dilation",
}

OPERAND_ANNOTATIONS = ("const",)

OPLIST_KINDS = ("passthrough", "share_scale", "float")

# placement key -> allowed values; the first value is the default
PLACEMENT_KEYS: dict[str, tuple[str, ...]] = {
    "quantize_weighted_outputs": ("true", "false"),
    "quantize_bias": ("true", "false"),
    "residual_add": ("quantize_both", "quantize_skip_only"),
    "qdq_per_consumer": ("false", "true"),
    "matmul_float_output": ("false", "true"),
    "float_elementwise_depth": ("0",),  # an integer >= 0 (PLACEMENT_INT_KEYS)
}

#: placement keys whose value is an integer >= 0 (their PLACEMENT_KEYS entry is the default)
PLACEMENT_INT_KEYS = frozenset({"float_elementwise_depth"})

STATEMENT_KEYWORDS = (
    "activation", "weight", "bias", "rounding", "calibration", "requant", "accumulator", "pattern", "drop",
    "passthrough", "share_scale", "float", "placement", "layout", "pad_channels", "fallback",
    "pipeline", "isa",
)


@lru_cache(maxsize=1)
def onnx_ops() -> frozenset[str]:
    """All operator names of the ONNX default domain."""
    import onnx.defs

    return frozenset(s.name for s in onnx.defs.get_all_schemas() if s.domain in ("", "ai.onnx"))


def pass_names() -> frozenset[str]:
    """The registered pass names (built-in passes and plugins loaded so far)."""
    from qcompiler.pipeline.registry import known_pass_names

    return frozenset(known_pass_names())


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The nearest valid spelling of `word` among `candidates`, or None."""
    cands = sorted(set(candidates))
    if not cands:
        return None
    lowered: dict[str, str] = {}
    for c in cands:
        lowered.setdefault(c.lower(), c)
    key = word.lower()
    if key in lowered:
        return lowered[key]
    folded = key.replace("-", "_")
    for low, orig in lowered.items():
        if low.replace("-", "_") == folded:
            return orig
    close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """', did you mean 'X'?' or '' when nothing is near."""
    best = suggest(word, candidates)
    return f", did you mean '{best}'?" if best else ""
