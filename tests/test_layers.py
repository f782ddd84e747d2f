"""The layering of tfk_trainer's modules, read from their source with `ast`.

`import_graph` parses every module of a package (nothing is imported, so the
test also sees imports that never run, such as those inside functions) and
returns, per module, the modules of the same package it imports. The tests
below hold `tfk_trainer.data` to its layering: no import cycle, no
function-level (lazy) imports, adapters importing only the modules below them
(`base`, `structure`, `class_weight`, `py_dataset`) and `factory` on top. Other
packages can add their own rules on the same graph.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import tfk_trainer

PACKAGE_ROOT = pathlib.Path(tfk_trainer.__file__).parent
DATA = "tfk_trainer.data"


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement of `importer` that reaches `target`, a module of the package."""

    importer: str
    target: str
    lineno: int
    lazy: bool  # inside a function body: runs when called, not when the module loads
    type_checking: bool  # under `if TYPE_CHECKING:`: never runs


def module_files(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Every module of the package under `root`, by dotted name (`pkg.sub.mod`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


class _ImportCollector(ast.NodeVisitor):
    """Collects the import statements of one module, noting where each sits."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []
        self._functions = 0
        self._type_checking = 0

    def _visit_function(self, node: ast.AST) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _visit_function  # noqa: N815 - ast.NodeVisitor's naming
    visit_AsyncFunctionDef = _visit_function  # noqa: N815

    def visit_If(self, node: ast.If) -> None:  # noqa: N802 - ast.NodeVisitor's naming
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _record(self, node: ast.Import | ast.ImportFrom) -> None:
        self.found.append((node, self._functions > 0, self._type_checking > 0))

    visit_Import = _record  # noqa: N815
    visit_ImportFrom = _record  # noqa: N815


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> list[str]:
    """The package's modules an import statement loads (outside ones are dropped)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    if node.level:  # relative: from the importer's package, `level - 1` packages up
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:  # `from pkg import submodule`
            targets.append(submodule)
        elif base in known:  # `from module import name`
            targets.append(base)
    return list(dict.fromkeys(targets))


def import_graph(root: pathlib.Path, package: str) -> dict[str, list[Import]]:
    """For each module of the package, the imports that reach its other modules."""
    files = module_files(root, package)
    known = set(files)
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        collector = _ImportCollector()
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        is_package = path.name == "__init__.py"
        graph[module] = [
            Import(module, target, node.lineno, lazy, type_checking)
            for node, lazy, type_checking in collector.found
            for target in _targets(node, module, is_package, known)
            if target != module
        ]
    return graph


def find_cycle(graph: dict[str, list[Import]], modules: set[str]) -> list[str] | None:
    """An import cycle among `modules` (`[a, b, ..., a]`), or None.

    Imports under `if TYPE_CHECKING:` never run and are not followed; lazy
    ones are (they form a cycle as soon as the function runs).
    """
    edges = {
        m: sorted({i.target for i in graph[m] if i.target in modules and not i.type_checking})
        for m in modules
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in edges[module]:
            cycle = visit(target, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(modules):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def _data_modules(graph: dict[str, list[Import]]) -> set[str]:
    return {m for m in graph if m == DATA or m.startswith(DATA + ".")}


def test_graph_builder_sees_cycles_lazy_and_relative_imports(tmp_path):
    """The builder itself, on a small package with each case in it."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import os\nfrom pkg import b\n")
    (package / "b.py").write_text(
        "def later():\n    from . import a\n    from pkg import c\n    return a, c\n"
    )
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nimport pkg.a\nif TYPE_CHECKING:\n    from pkg import b\n"
    )
    (package / "sub" / "__init__.py").write_text("from ..c import pkg\n")
    (package / "sub" / "d.py").write_text("from .. import sub\nfrom . import __name__ as n\n")
    graph = import_graph(package, "pkg")
    assert set(graph) == {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"}
    assert graph["pkg.a"] == [Import("pkg.a", "pkg.b", 2, lazy=False, type_checking=False)]
    assert graph["pkg.b"] == [
        Import("pkg.b", "pkg.a", 2, lazy=True, type_checking=False),
        Import("pkg.b", "pkg.c", 3, lazy=True, type_checking=False),
    ]
    assert graph["pkg.c"] == [
        Import("pkg.c", "pkg.a", 2, lazy=False, type_checking=False),
        Import("pkg.c", "pkg.b", 4, lazy=False, type_checking=True),
    ]
    assert [i.target for i in graph["pkg.sub"]] == ["pkg.c"]
    assert [i.target for i in graph["pkg.sub.d"]] == ["pkg.sub", "pkg.sub"]
    assert find_cycle(graph, set(graph)) == ["pkg.a", "pkg.b", "pkg.a"]
    assert find_cycle(graph, {"pkg.a", "pkg.c", "pkg.sub"}) is None
    # c imports b only under TYPE_CHECKING, which never runs: no cycle with b's import of c.
    assert find_cycle(graph, {"pkg.b", "pkg.c"}) is None


def test_the_graph_covers_tfk_trainer():
    """A sanity check that the real package is read: data/ modules and their known edges."""
    graph = import_graph(PACKAGE_ROOT, "tfk_trainer")
    assert {"tfk_trainer.model", "tfk_trainer.data.base", "tfk_trainer.data.factory"} <= set(graph)
    targets = {i.target for i in graph["tfk_trainer.data.factory"]}
    assert {"tfk_trainer.data.adapters", "tfk_trainer.data.static"} <= targets


def test_data_modules_import_no_cycle():
    graph = import_graph(PACKAGE_ROOT, "tfk_trainer")
    cycle = find_cycle(graph, _data_modules(graph))
    assert cycle is None, f"Import cycle among tfk_trainer.data modules: {' -> '.join(cycle)}"


def test_data_modules_have_no_lazy_imports():
    """Every import in data/ is at module level: the dependencies are all in plain view."""
    graph = import_graph(PACKAGE_ROOT, "tfk_trainer")
    lazy = []
    for module in sorted(_data_modules(graph)):
        path = module_files(PACKAGE_ROOT, "tfk_trainer")[module]
        collector = _ImportCollector()
        collector.visit(ast.parse(path.read_text(encoding="utf-8")))
        # Outside modules count too (`import types` inside a function is just as hidden).
        lazy += [f"{module}:{node.lineno}" for node, is_lazy, _ in collector.found if is_lazy]
    assert not lazy, f"Function-level imports in tfk_trainer.data: {lazy}"


def test_data_layers():
    """Adapters sit on `base`, `structure`, `composite`, `class_weight` and `py_dataset`; `factory`
    on the adapters; nothing in data/ imports from outside it or from `factory`."""
    graph = import_graph(PACKAGE_ROOT, "tfk_trainer")
    data = _data_modules(graph)
    bottom = {
        f"{DATA}.{name}"
        for name in ("base", "structure", "composite", "class_weight", "py_dataset")
    }
    adapters = {f"{DATA}.{name}" for name in ("adapters", "functions", "python_sources", "static")}
    assert bottom | adapters | {DATA, f"{DATA}.factory"} == data, "a new data/ module: place it"
    for module in sorted(data):
        targets = {i.target for i in graph[module]}
        assert targets <= data, f"{module} imports from outside tfk_trainer.data: {targets - data}"
        if module in bottom | adapters:
            assert targets <= bottom, f"{module} imports above its layer: {targets - bottom}"
    assert adapters <= {i.target for i in graph[f"{DATA}.factory"]}


def test_data_module_and_function_sizes():
    """No data/ file over 500 lines and no function over 60: each reads in one sitting."""
    files = module_files(PACKAGE_ROOT, "tfk_trainer")
    too_long = []
    for module, path in files.items():
        if module != DATA and not module.startswith(DATA + "."):
            continue
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > 500:
            too_long.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{module}.{node.name}: {length} lines")
    assert not too_long, too_long
