"""Shipped target description files (package data)."""
