"""`qcompiler passes | inspect | diff | targets`: looking at passes, models and targets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from qcompiler.errors import UsageError


def register(group) -> None:
    """Add the commands of this module to the qcompiler group."""
    # ---------------------------------------------------------------------------------- passes
    @group.command("passes")
    def passes_cmd():
        """List the registered passes with what they require and provide, and their options."""
        from qcompiler.pipeline import all_passes

        for name, cls in all_passes().items():
            req = ",".join(sorted(cls.requires)) or "-"
            prov = ",".join(sorted(cls.provides)) or "-"
            click.echo(f"{name:<22} {cls.description}")
            line = f"{'':<22} requires: {req}   provides: {prov}"
            for what, facts in (("wants", cls.wants), ("offers", cls.offers)):
                if facts:
                    line += f"   {what}: {','.join(sorted(facts))}"
            click.echo(line)
            for key, opt in (cls.config or {}).items():
                click.echo(f"{'':<23}option {key}: {opt.describe()}  - {opt.help}")


    # ---------------------------------------------------------------------------------- inspect
    @group.command("inspect")
    @click.argument("model", type=click.Path(dir_okay=False))
    def inspect_cmd(model):
        """Op histogram, inputs/outputs with shapes, opset and size of MODEL."""
        from qcompiler.ir import load_ir
        from qcompiler.ir.printer import tensor_str

        ir = load_ir(model)
        g = ir.graph
        size = Path(model).stat().st_size
        n_init = sum(1 for t in ir.tensors().values() if ir.is_const(t))
        click.echo(f"model:   {model}")
        click.echo(f"opset:   {ir.opset}   ir_version: {ir.model_meta.get('ir_version')}   "
                   f"producer: {ir.model_meta.get('producer_name') or '-'}")
        click.echo(f"size:    {size / 1e6:.2f} MB   nodes: {len(g.nodes)}   initializers: {n_init}")
        for t in g.inputs:
            click.echo(f"input:   {tensor_str(t)}")
        for t in g.outputs:
            click.echo(f"output:  {tensor_str(t)}")
        hist = Counter(n.op if n.domain in ("", None) else f"{n.domain}.{n.op}" for n in g.nodes)
        click.echo("ops:")
        for op, count in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
            click.echo(f"  {op:<28}{count:>6}")


    # ---------------------------------------------------------------------------------- diff
    @group.command("diff")
    @click.argument("a", type=click.Path())
    @click.argument("b", type=click.Path())
    def diff_cmd(a, b):
        """Nodes added, removed and changed between two models or dump steps."""
        from qcompiler.ir.diff import diff_node_lines, format_diff

        click.echo(format_diff(diff_node_lines(_lines_of(a), _lines_of(b)), f"{a} -> {b}"), nl=False)


    def _lines_of(path):
        from qcompiler.ir import load_ir, node_lines

        p = Path(path)
        if not p.exists() and p.with_suffix(".onnx").exists():
            p = p.with_suffix(".onnx")
        if p.suffix == ".txt":
            if not p.exists():
                raise UsageError(f"'{p}' does not exist", "give a model or a dump step")
            out = {}
            for line in p.read_text().splitlines():
                if " = " in line and not line.startswith(("graph ", "input ", "output ", "scale-group ")):
                    out[line.split(" = ", 1)[0]] = line
            return out
        return node_lines(load_ir(p))


    # ---------------------------------------------------------------------------------- targets
    @group.group("targets", invoke_without_command=True)
    @click.pass_context
    def targets_cmd(ctx):
        """List shipped targets; 'targets show NAME' prints one resolved."""
        if ctx.invoked_subcommand is None:
            from qcompiler.target import list_targets

            for name, desc in list_targets():
                click.echo(f"{name:<14} {desc}")


    @targets_cmd.command("show")
    @click.argument("name")
    def targets_show(name):
        """Print target NAME (or a .qtarget file) with inheritance applied."""
        from qcompiler.target import format_target, load_target

        click.echo(format_target(load_target(name)), nl=False)


