"""The house's one rule, checked: data flows one way, so no module imports from a layer above its
own, the two sources never import each other, and no two modules import each other.

Layers, bottom up (STYLE.md, "The shape of the house"); modules in one layer may import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "entra_pipeline"

# module prefix -> layer; the longest matching prefix wins.
LAYERS = {
    "errors": 0,
    "vocabulary": 0,
    "names": 0,
    "dagster_private": 0,
    "secrets": 0,
    "credentials": 0,
    "settings": 1,
    "credential_options": 0,
    "actions": 5,
    "connector_folder": 1,
    "config_file": 1,
    "run_tags": 1,
    "graph": 2,
    "warehouse": 2,
    "resources": 3,
    "sync": 3,
    "incremental": 3,
    "publication": 3,
    "connector": 4,
    "user_source": 4,
    "operations": 5,
    "definitions": 6,
    "preflight": 6,
    "demo": 6,
    "cli": 6,
    "run_once": 6,
    "run_log": 5,
    "fleet": 6,
    "celery_launcher": 6,
    # The emulator is Microsoft's side of the wire: it imports nothing of the pipeline, and only
    # the demo (and the tests) import it.
    "emulator": 6,
}
# Siblings in one layer that must not know each other.
STRANGERS = [("graph", "warehouse"), ("connector", "user_source")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def top(module: str) -> str:
    return module.split(".")[0]


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The import statements inside `if TYPE_CHECKING:` blocks (annotations, never run)."""
    return {
        child
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for statement in node.body
        for child in ast.walk(statement)
    }


def imports_of(path: Path, *, annotations: bool = True) -> set[str]:
    """Every entra_pipeline module `path` imports, at any depth (with `annotations`, those under
    TYPE_CHECKING too); `from package import module` counts as importing that module."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set() if annotations else _type_checking_only(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("entra_pipeline."):
                base = node.module.removeprefix("entra_pipeline.")
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("entra_pipeline.")
                for a in node.names
                if a.name.startswith("entra_pipeline.")
            }
    return found


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}
# What runs: an import only annotations need cannot make a cycle.
RUNTIME_GRAPH = {
    module_name(path): imports_of(path, annotations=False) for path in PACKAGE.rglob("*.py")
}


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{module} (layer {LAYERS[top(module)]}) imports {imported} (layer {LAYERS[top(imported)]})"
        for module, imported_modules in GRAPH.items()
        if module
        for imported in imported_modules
        if LAYERS[top(imported)] > LAYERS[top(module)]
    ]
    assert upward == []


def test_sibling_packages_that_must_not_know_each_other_do_not() -> None:
    crossing = [
        f"{module} imports {imported}"
        for module, imported_modules in GRAPH.items()
        for imported in imported_modules
        for a, b in STRANGERS
        if {top(module), top(imported)} == {a, b}
    ]
    assert crossing == []


def test_the_emulator_imports_nothing_of_the_pipeline() -> None:
    reaching_out = [
        f"{module} imports {imported}"
        for module, imported_modules in GRAPH.items()
        if top(module) == "emulator"
        for imported in imported_modules
        if top(imported) != "emulator"
    ]
    assert reaching_out == []


def test_no_two_modules_import_each_other() -> None:
    mutual = sorted(
        {
            tuple(sorted((module, imported)))
            for module, imported_modules in RUNTIME_GRAPH.items()
            for imported in imported_modules
            if module in RUNTIME_GRAPH.get(imported, set())
        }
    )
    assert mutual == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.get(module, set()):
            if imported not in graph:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_circle_of_files_type_only_imports_included() -> None:
    assert _cycles(GRAPH) == []


def test_a_circle_of_three_files_is_found() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_no_module_over_500_lines_and_no_function_over_60_outside_the_emulator() -> None:
    """A module a newcomer reads top to bottom, functions that fit a screen (the emulator,
    Microsoft's side of the wire, is held to Graph's behaviour instead)."""
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if top(module_name(path)) == "emulator":
            continue
        text = path.read_text(encoding="utf-8")
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert too_long == []
