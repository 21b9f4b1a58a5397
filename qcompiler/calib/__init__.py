"""Calibration data: loading, checking and batching user samples."""
