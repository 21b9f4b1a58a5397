from qcompiler.pipeline import Pass, register_pass


@register_pass("corpus-noop")
class Noop(Pass):
    """Does nothing."""

    def run(self, ir, ctx) -> bool:
        return False
