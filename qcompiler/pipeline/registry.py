"""The Pass base class and the pass registry.

Built-in passes live one a module in `qcompiler.passes` (module name = pass name with
'-' as '_'). Third-party passes register through the entry-point group
`qcompiler.passes` or a `--plugin file.py`; all use `@register_pass`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, Optional, Type

from ..errors import PipelineError, QCompilerError
from .options import Option, Settings, resolve

_REGISTRY: Dict[str, Type["Pass"]] = {}
_BUILTINS_LOADED = False
_ENTRY_POINTS_LOADED = False


class Pass:
    """A transformation of the IR.

    Subclasses set `name`, `requires` and `provides` (through @register_pass) and
    implement `run(ir, ctx) -> bool` (whether anything changed). A pass edits the IR only
    through its gateway and never cleans up or sorts: the manager does that after it.

    `config` declares the pass's options (qcompiler.pipeline.options); `self.settings(ctx)`
    gives their typed values. `wants` names facts the pass uses when an earlier pass
    `offers` them (made only on demand: calibrate measures input means in its own run
    when bias-correction comes later); unlike `requires`, a pass does without them.
    """

    name: str = ""
    description: str = ""
    requires: FrozenSet[str] = frozenset()
    provides: FrozenSet[str] = frozenset()
    wants: FrozenSet[str] = frozenset()
    offers: FrozenSet[str] = frozenset()
    config: Optional[Dict[str, Option]] = None  # None: undeclared, options pass unchecked

    def __init__(self, **options):
        self.options = options  # this pass's own options, as given (pass_options)

    def settings(self, ctx) -> Settings:
        """This pass's declared options, typed: its own options, else the build-wide ones
        of the same name, else the declared defaults."""
        return resolve(self.name, type(self).config, self.options, getattr(ctx, "options", None) or {})

    def run(self, ir, ctx) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


def register_pass(name: str, requires: Iterable[str] = (), provides: Iterable[str] = (),
                  description: Optional[str] = None, wants: Iterable[str] = (), offers: Iterable[str] = ()):
    """Class decorator: `@register_pass("fold-bn", requires={"canonical"}, provides={"bn-folded"})`."""

    def wrap(cls):
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"@register_pass('{name}') must decorate a subclass of qcompiler.Pass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise PipelineError(f"two passes are registered as '{name}' ({existing.__module__} and {cls.__module__})",
                                "rename one of them")
        cls.name = name
        cls.requires = frozenset(requires)
        cls.provides = frozenset(provides)
        cls.wants = frozenset(wants)
        cls.offers = frozenset(offers)
        doc = (cls.__doc__ or "").strip().splitlines()
        cls.description = description or (doc[0] if doc else "")
        _REGISTRY[name] = cls
        return cls

    return wrap


def load_builtin_passes() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    import qcompiler.passes as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"qcompiler.passes.{info.name}")
    for cls in _REGISTRY.values():  # a built-in pass that declares no options takes none
        if cls.__module__.startswith("qcompiler.passes.") and cls.config is None:
            cls.config = {}
    _BUILTINS_LOADED = True


def load_entry_point_passes() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="qcompiler.passes"):
        try:
            obj = ep.load()
        except Exception as e:
            raise PipelineError(f"cannot load pass plugin '{ep.name}' ({ep.value}): {type(e).__name__}: {e}",
                                "fix or uninstall the package that provides it") from None
        if isinstance(obj, type) and issubclass(obj, Pass) and obj.name not in _REGISTRY:
            register_pass(ep.name)(obj)


def load_plugin(path: str) -> None:
    """Import a Python file so that its @register_pass classes join the registry."""
    p = Path(path)
    if not p.is_file():
        raise PipelineError(f"plugin file '{p}' does not exist", "check the --plugin path")
    mod_name = f"qcompiler_plugin_{abs(hash(str(p.resolve())))}"
    if mod_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise PipelineError(f"plugin '{p}' is not a Python file", "pass a .py file to --plugin")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except QCompilerError:
        del sys.modules[mod_name]
        raise
    except SyntaxError as e:
        del sys.modules[mod_name]
        raise PipelineError(f"plugin '{p}' line {e.lineno}: syntax error: {e.msg}", "fix the plugin file") from None
    except SystemExit as e:  # would end qcompiler silently, whatever the code
        del sys.modules[mod_name]
        raise PipelineError(f"plugin '{p}' called sys.exit({e.code!r}) while it was imported",
                            "a plugin must raise an exception instead of exiting") from None
    except Exception as e:
        del sys.modules[mod_name]
        raise PipelineError(f"plugin '{p}' failed to import: {type(e).__name__}: {e}", "fix the plugin file") from None


def all_passes() -> Dict[str, Type[Pass]]:
    load_builtin_passes()
    load_entry_point_passes()
    return dict(sorted(_REGISTRY.items()))


def known_pass_names() -> set:
    return set(all_passes())


def get_pass(name: str) -> Type[Pass]:
    passes = all_passes()
    if name not in passes:
        import difflib

        near = difflib.get_close_matches(name, passes, n=1)
        hint = f"did you mean '{near[0]}'?" if near else "run 'qcompiler passes' to list them"
        raise PipelineError(f"unknown pass '{name}'", hint)
    return passes[name]
