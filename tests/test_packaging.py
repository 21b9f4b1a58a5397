"""Both install modes ship the mapped packages: `passes/` as qcompiler.passes and the
target files as package data of qcompiler.targets."""

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("qcompiler", "passes", "targets", "pyproject.toml", "README.md")


def _source_copy(tmp_path) -> Path:
    """Build from a copy: installs write build/ and egg-info next to the sources."""
    src = tmp_path / "src"
    src.mkdir()
    for part in PARTS:
        subprocess.run(["cp", "-r", str(ROOT / part), str(src)], check=True)
    return src


def _pip(*args, cwd):
    # --ignore-installed: never uninstall the qcompiler the test session itself runs from
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", *args], check=True, cwd=cwd)


def test_pip_install_ships_passes_and_targets(tmp_path):
    target = tmp_path / "site"
    _pip("--target", str(target), str(_source_copy(tmp_path)), cwd=tmp_path)
    check = (
        "import importlib.resources as r, qcompiler, qcompiler.passes.fold_bn;"
        "from qcompiler.pipeline import known_pass_names; from qcompiler.target import load_target;"
        "assert 'fold-bn' in known_pass_names(); assert load_target('cuda').name == 'cuda';"
        "assert r.files('qcompiler.targets').joinpath('arm64.qtarget').is_file();"
        "assert r.files('qcompiler.target').joinpath('grammar.lark').is_file();"
        "print(qcompiler.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert Path(out.stdout.strip()).is_relative_to(target)


def test_pip_install_editable_maps_passes_and_targets(tmp_path):
    src = _source_copy(tmp_path)
    prefix = tmp_path / "prefix"
    _pip("--prefix", str(prefix), "-e", str(src), cwd=tmp_path)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    # -S: only the editable install is importable, so its finder (not another copy) answers
    check = (
        f"import site; site.addsitedir({str(purelib)!r});"
        "import importlib.util, importlib.resources as r;"
        "print(importlib.util.find_spec('qcompiler.passes.fold_bn').origin);"
        "print(r.files('qcompiler.targets').joinpath('x86.qtarget'))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", check], check=True, capture_output=True, text=True,
                         cwd=tmp_path)
    passes_file, target_file = (Path(line) for line in out.stdout.split())
    assert passes_file == src / "passes" / "fold_bn.py"
    assert target_file == src / "targets" / "x86.qtarget"
