"""A pass during which the user presses Ctrl-C."""

from qcompiler.pipeline import Pass, register_pass


@register_pass("corpus-interrupt")
class Interrupt(Pass):
    """Edits the graph, then is interrupted."""

    def run(self, ir, ctx) -> bool:
        node = ir.graph.nodes[0]
        ir.rename_node(node, node.name + "_touched")
        raise KeyboardInterrupt
