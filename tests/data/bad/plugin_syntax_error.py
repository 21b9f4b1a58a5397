from qcompiler.pipeline import Pass, register_pass


@register_pass("corpus-syntax")
class Broken(Pass):
    def run(self, ir, ctx) -> bool
        return False
