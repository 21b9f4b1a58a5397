"""Broken target files fail with ONE line that says where and what; nothing else escapes.

Each file in tests/data/broken_targets/ starts with `# expect: [FILE:]LINE:COL fragment`:
loading it must raise TargetError whose one-line message starts with FILE:LINE:COL (FILE
is the file itself unless named) and contains the fragment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcompiler.errors import TargetError
from qcompiler.target import load_target, parse_target, shipped_target_path

CORPUS = Path(__file__).resolve().parent / "data" / "broken_targets"
FILES = sorted(CORPUS.glob("*.qtarget"))
_EXPECT = re.compile(r"^# expect: (?:(?P<file>[\w.-]+\.qtarget):)?(?P<line>\d+):(?P<col>\d+) "
                     r"(?P<fragment>.+)$")
_WHERE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): ")


def test_corpus_is_big_enough():
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_broken_target(path: Path):
    header = path.read_text().split("\n", 1)[0]
    want = _EXPECT.match(header)
    assert want, f"{path.name}: first line must be '# expect: LINE:COL fragment'"
    try:
        load_target(path)
    except TargetError as exc:
        message = str(exc)
    else:
        pytest.fail(f"{path.name} loaded without error")
    assert "\n" not in message
    got = _WHERE.match(message)
    assert got, f"no FILE:LINE:COL in {message!r}"
    assert Path(got["file"]).name == (want["file"] or path.name), message
    assert (got["line"], got["col"]) == (want["line"], want["col"]), message
    assert want["fragment"] in message, message


def test_error_carries_position():
    with pytest.raises(TargetError) as e:
        load_target(CORPUS / "unknown_op_in_pattern.qtarget")
    pos = e.value.pos
    assert (pos.line, pos.col) == (5, 18)


def test_parse_target_syntax_error_from_string():
    with pytest.raises(TargetError) as e:
        parse_target('target t "x" {\n  activation int8 symmetric per_tensor\n  ???\n}', "s.qtarget")
    assert str(e.value).startswith("s.qtarget:3:3: expected")


def test_non_utf8_file(tmp_path):
    p = tmp_path / "binary.qtarget"
    p.write_bytes(b"\xff\xfe\x00target")
    with pytest.raises(TargetError, match="UTF-8"):
        load_target(p)


def test_constraints_are_never_evaluated_as_python(tmp_path):
    # a would-be Python expression is a syntax error, not code
    with pytest.raises(TargetError, match="expected"):
        parse_target('target t "x" { activation int8 weight int8 pipeline canonicalize '
                     'pattern p : Conv where __import__("os").system("true") }')


# ------------------------------------------------------------------ fuzzing

_SOURCES = [Path(shipped_target_path(n)).read_text() for n in ("arm64", "x86", "cuda", "arm64-dot")]
_TOKENS = [
    "target", "extends", "{", "}", "(", ")", "[", "]", ",", ":", "->", "?", "*", "|", "%", "==",
    "<=", "=", "and", "in", "not", "where", "benefit", "pattern", "drop", "layout", "input",
    "when", "placement", "pipeline", "passthrough", "share_scale", "float", "activation",
    "weight", "bias", "for", "rounding", "requant", "accumulator", "pad_channels", "fallback",
    "Conv", "Cnv", "Relu", "Concat", "NCHW44", "NCHW4", "int8", "int9", "uint8", "symmetric",
    "per_channel(axis=1)", "per_channel(axis=x)", "narrow", "reduce_range", "fixed_point(q31)",
    "float_scale", "ic", "oc", "group", "kernel", "ics", "0", "4", "-1", "99999999999999999999",
    "x86", "arm64", "fold-bn", "fold-bnn", "true", "false", "#", '"', '"desc"', "\n", " ", "é",
    "\t", "$", "\x00",
]


@st.composite
def _mutated(draw):
    text = draw(st.sampled_from(_SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "token", "swap_token"]))
        n = len(text)
        i = draw(st.integers(0, max(n - 1, 0)))
        if kind == "delete":
            j = min(n, i + draw(st.integers(1, 30)))
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.text(min_size=1, max_size=4)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.characters()) + text[i + 1:]
        elif kind == "token":
            text = text[:i] + " " + draw(st.sampled_from(_TOKENS)) + " " + text[i:]
        else:
            words = list(re.finditer(r"[A-Za-z_][\w-]*|[^\sA-Za-z_]", text))
            if words:
                m = words[draw(st.integers(0, len(words) - 1))]
                text = text[: m.start()] + draw(st.sampled_from(_TOKENS)) + text[m.end():]
    return text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_targets_load_or_fail_with_one_line(text):
    try:
        parse_target(text, "fuzz.qtarget")
    except TargetError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        assert _WHERE.match(message), message
