"""Target description language: grammar, parser, resolved Target model."""
