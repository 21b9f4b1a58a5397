"""What the machine running qcompiler can do, for hints about x86 targets."""

from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU feature flags of an x86 Linux host (empty elsewhere)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def avx2_without_vnni(flags=None) -> bool:
    """True on AVX2 CPUs without AVX512-VNNI / AVX-VNNI, where ONNX Runtime's u8s8 kernels
    add products in saturating int16 pairs (the x86-avx2 target is built for them)."""
    flags = cpu_flags() if flags is None else flags
    return "avx2" in flags and not ({"avx512_vnni", "avx_vnni"} & set(flags))


X86_HINT = ("this CPU has AVX2 but no VNNI: ONNX Runtime's u8s8 kernels here add weight pairs in "
            "saturating int16, which --target x86 weights can overflow; for models that run on "
            "such CPUs use --target x86-avx2")
