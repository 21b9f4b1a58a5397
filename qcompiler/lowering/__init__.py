"""Lowering to target integer arithmetic: QDQ model -> Program (lower.py, recognise/,
layout_plan.py, emit.py) and the reference interpreter that runs programs
(interpreter.py, int_kernels.py, float_ops.py)."""
