"""Typed pass options: a pass declares what it reads, the manager checks values up front.

    @register_pass("calibrate", requires={"observed"}, provides={"calibrated"})
    class Calibrate(Pass):
        config = {"percentile": Option(float, 99.99, "percentile for the percentile method")}

        def run(self, ir, ctx):
            cfg = self.settings(ctx)      # cfg.percentile is a float
            ...

A value comes from the pass's own options (`build(pass_options={"calibrate": {...}})`),
else from the build-wide options of the same name (`build(options=...)`, which the CLI
flags fill), else from the declaration's default. A build-wide option may serve several
passes (keep_float: insert-observers, import-qdq, quantize-dynamic). Unknown pass options
and values of the wrong type are a UsageError naming the pass, the option and the fix,
before the first pass runs. A pass that declares nothing (`config = None`, third-party
passes written before this) takes whatever it is given, unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

from ..errors import UsageError

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping", object: "any value"}


@dataclass(frozen=True)
class Option:
    """One declared option: its type (bool, int, float, str, list, dict or object), default
    (None: not set, the pass decides), help text and, for strings, the allowed values."""

    type: type
    default: Any = None
    help: str = ""
    choices: Optional[Sequence[str]] = None

    def coerce(self, value, pass_name: str, key: str):
        """The value as the declared type, or a UsageError naming the pass and the option.
        None means "not set" and stays None. Numbers may come as numeric strings (a config
        file); a bool is not a number and a string is not a list."""
        if value is None or self.type is object:
            return value
        t = self.type
        ok, out = False, value
        if t is bool:
            ok = isinstance(value, bool)
        elif t in (int, float):
            if isinstance(value, bool):
                ok = False
            elif isinstance(value, (int, float)) and (t is float or float(value).is_integer()):
                ok, out = True, t(value)
            elif isinstance(value, str):
                try:
                    out, ok = t(value.strip()), True
                except ValueError:
                    ok = False
            else:
                try:  # numpy scalars
                    import numpy as np

                    if isinstance(value, np.number) and (t is float or float(value).is_integer()):
                        ok, out = True, t(value)
                except ImportError:  # pragma: no cover
                    pass
        elif t is str:
            ok = isinstance(value, str)
        elif t is list:
            ok = isinstance(value, (list, tuple, set, frozenset))
        elif t is dict:
            ok = isinstance(value, Mapping)
        if not ok:
            raise UsageError(f"option '{key}' of pass '{pass_name}' is {_describe(value)}, not {_TYPE_NAMES.get(t, t.__name__)}",
                             f"give {key} {_TYPE_NAMES.get(t, t.__name__)}" + (f" ({self.help})" if self.help else ""))
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"option '{key}' of pass '{pass_name}' is {out!r}, not one of {', '.join(self.choices)}",
                             f"give {key} one of {', '.join(self.choices)}")
        return out

    def describe(self) -> str:
        kind = "|".join(self.choices) if self.choices else (self.type.__name__ if self.type is not object else "any")
        default = "" if self.default is None else f" = {self.default!r}"
        return f"{kind}{default}"


# build-wide options that several passes read, declared once
EMIT_OPTION = Option(str, None, "output form (--emit)", choices=("qdq", "qop", "program", "c"))
METHOD_OPTION = Option(str, None, "calibration method: minmax, moving_average, percentile, entropy, mse "
                       "(--method; default: the target's)")
KEEP_FLOAT_OPTION = Option(list, (), "node names or globs kept float (--keep-float)")
PROGRESS_OPTION = Option(bool, False, "progress bars (the CLI without -q)")


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


class Settings(Mapping):
    """A pass's resolved options: attribute or key access (`cfg.percentile`, `cfg["percentile"]`)."""

    def __init__(self, values: Dict[str, Any]):
        self._values = dict(values)

    def __getattr__(self, key: str):
        try:
            return self.__dict__["_values"][key]
        except KeyError:
            raise AttributeError(f"no option '{key}'") from None

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def resolve(pass_name: str, config: Optional[Dict[str, Option]], given: Mapping, build_wide: Mapping) -> Settings:
    """The typed values of a pass's declared options (see the module doc). Given options
    a pass does not declare are refused; a pass without a declaration gets `given` as is."""
    if config is None:
        return Settings(given)
    unknown = sorted(set(given) - set(config))
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], list(config), n=1)
        known = ", ".join(sorted(config)) or "none"
        hint = f"did you mean '{near[0]}'?" if near else f"its options: {known} ('qcompiler passes' lists them)"
        raise UsageError(f"pass '{pass_name}' has no option '{unknown[0]}'", hint)
    values = {}
    for key, opt in config.items():
        if key in given and given[key] is not None:
            raw = given[key]
        elif build_wide.get(key) is not None:
            raw = build_wide[key]
        else:
            raw = opt.default
        values[key] = opt.coerce(raw, pass_name, key)
    return Settings(values)
