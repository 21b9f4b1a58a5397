"""Built-in passes. One module a pass; the module name is the pass name with - as _."""
