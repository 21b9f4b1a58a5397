"""Lowering to target integer arithmetic: fixed-point requant, layouts, programs."""
