"""A pass that does some work on the graph and then fails."""

from qcompiler.pipeline import Pass, register_pass


@register_pass("corpus-raises")
class Raises(Pass):
    """Renames a node, then raises (a bug in a third-party pass)."""

    def run(self, ir, ctx) -> bool:
        node = ir.graph.nodes[0]
        ir.rename_node(node, node.name + "_touched")
        raise RuntimeError("deliberate failure in a plugin pass")
