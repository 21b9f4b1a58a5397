"""Pass infrastructure: the Pass base class, registry, pipeline building and the pass manager."""

from .manager import Context, PassManager, build_pipeline
from .registry import Pass, all_passes, get_pass, known_pass_names, load_plugin, register_pass

__all__ = ["Pass", "register_pass", "all_passes", "get_pass", "known_pass_names", "load_plugin",
           "Context", "PassManager", "build_pipeline"]
