"""Model builders shared by tests, examples and benchmarks."""
