"""Which layers run at which precision: per-layer overrides, int4/int16 bit widths the target
allows, and the automatic mixed-precision search over quantized variants.
"""
