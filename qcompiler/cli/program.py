"""`qcompiler run | verify`: executing lowered programs and checking them against the QDQ model."""

from __future__ import annotations

import click

def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def register(group) -> None:
    """Add the commands of this module to the qcompiler group."""
    # ---------------------------------------------------------------------------------- program
    @group.command("run")
    @click.argument("program", type=click.Path(dir_okay=False))
    @click.option("--input", "input_path", required=True, type=click.Path(),
                  help="A .npy (one-input program) or a .npz with arrays named after the inputs.")
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npy or .npz.")
    @click.option("--force", is_flag=True, help="Overwrite an existing output file.")
    @click.option("--backend", type=click.Choice(["interpreter", "c"]), default="interpreter", show_default=True,
                  help="The integer reference interpreter, or the program as generated C compiled with the host "
                       "compiler (cached) and run through ctypes.")
    def run_cmd(program, input_path, output, force, backend):
        """Execute a lowered program (--emit program) with the integer reference interpreter."""
        from qcompiler.outputs import OutputPlan
        from qcompiler.program_files import run_to_file

        plan = OutputPlan("run", force)
        plan.input(program, "the program")
        plan.input(input_path)
        outs = run_to_file(program, input_path, plan.file(output, "output", "-o"), backend=backend)
        for name, value in outs.items():
            click.echo(f"{name}: {value.dtype}{list(value.shape)}")
        _echo_err(f"wrote {output}")


    @group.command("verify")
    @click.argument("program", type=click.Path(dir_okay=False))
    @click.argument("qdq_model", type=click.Path(dir_okay=False))
    @click.option("--data", required=True, type=click.Path(), help="A .npy/.npz file or a folder of them.")
    @click.option("--task", type=click.Choice(["auto", "argmax", "probmap", "none"]), default="auto", show_default=True,
                  help="Task check: argmax agreement or probability map above 0.3.")
    def verify_cmd(program, qdq_model, data, task):
        """Run PROGRAM and QDQ_MODEL (in ONNX Runtime) on the same inputs and report agreement."""
        from qcompiler.errors import QCompilerError
        from qcompiler.lowering.verify import verify_files
        from qcompiler.program_files import check_data_for

        check_data_for(program, data)
        rep = verify_files(program, qdq_model, data, task=task)
        click.echo(rep.format())
        if not rep.ok():
            err = QCompilerError("a program layer disagrees with the QDQ model beyond one quantization step",
                                 "see the layer-wise line above; report it with the program and the model")
            err.exit_code = 1
            raise err


