"""The house rules of the code layout: the library never imports the app or the scripts, no script imports another
script, and no module of the library imports itself back through others (no import circle, lazy imports counted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str] | None = None) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative imports resolved. Given the known
    ``modules``, ``from package import module`` counts as importing the module, not the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{module}.{alias.name}" for alias in node.names} & (modules or set())
            found.update(submodules or {module})
    return found


def _graph(folder: str) -> dict[str, set[str]]:
    files = {_module_name(path): path for path in (ROOT / folder).rglob("*.py")}
    known = set(files)
    return {name: {m for m in _imports(path, known) if m in files and m != name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph, as the modules along it, or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return trail[trail.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_in_the_library_or_the_app():
    assert _cycle(_graph("explainer")) is None
    assert _cycle(_graph("webapp")) is None


def test_the_library_imports_neither_the_app_nor_the_scripts():
    for path in (ROOT / "explainer").rglob("*.py"):
        outside = {m for m in _imports(path) if m.split(".")[0] in {"webapp", "train", "app", "gradio"}}
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


def test_no_script_imports_another_script():
    for path in (ROOT / "train").glob("*.py"):
        scripts = {m for m in _imports(path) if m.split(".")[0] == "train"}
        assert not scripts, f"{path.relative_to(ROOT)} imports {sorted(scripts)}"
