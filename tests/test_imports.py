"""Imports flow one way: no module of the package imports one that imports it back, and
the command line checks its arguments without TensorFlow."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "keras_rnnlm"


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    """The keras_rnnlm modules ``path`` imports: anywhere in it (inside functions and
    ``if __name__ == "__main__":`` blocks too), or only where importing it runs them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _top_level(tree.body) if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from keras_rnnlm import cli
    modules = {f"keras_rnnlm.{module.stem}" for module in PACKAGE.glob("*.py")}
    return {name for name in found if name in modules and name != f"keras_rnnlm.{path.stem}"} | (
        {"tensorflow"} if {"tensorflow", "keras"} & found else set())


def _top_level(body):
    """The import statements that run when the module is imported (not those inside
    functions, classes' methods, ``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not any(isinstance(name, ast.Name) and name.id in ("TYPE_CHECKING", "__name__")
                                                   for name in ast.walk(node.test)):
            yield from _top_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body + node.orelse + [n for handler in node.handlers for n in handler.body])


def import_graph(top_level_only: bool = False) -> dict[str, set[str]]:
    return {f"keras_rnnlm.{path.stem}": imported_modules(path, top_level_only) - {"tensorflow"} for path in PACKAGE.glob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of the graph as a list of modules (the first repeated at the end), or []."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        state[module] = "done"
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_the_package_imports_form_no_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["keras_rnnlm.train"] >= {"keras_rnnlm.cli", "keras_rnnlm.model"}
    assert find_cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_command_line_checks_load_no_tensorflow():
    """What ``cli.main`` imports before a command's checks are done loads no TensorFlow:
    every module it reaches at import time imports neither TensorFlow nor Keras there."""
    reached, pending = set(), ["keras_rnnlm.cli"]
    while pending:
        module = pending.pop()
        if module in reached:
            continue
        reached.add(module)
        imports = imported_modules(PACKAGE / f"{module.split('.')[1]}.py", top_level_only=True)
        assert "tensorflow" not in imports, f"{module} imports TensorFlow or Keras when it is imported"
        pending += sorted(imports)
    assert {"keras_rnnlm.arguments", "keras_rnnlm.config", "keras_rnnlm.runs"} <= reached
    assert "keras_rnnlm.train" not in reached and "keras_rnnlm.model" not in reached
