"""The import graph of kd/, study/ and analysis/: no cycles, and kd/ stays free of Ray.

Read from the source with `ast`, nothing is imported. Every import counts: one inside a
function only hides a cycle until the function runs, and one under `if TYPE_CHECKING:` ties
the modules together for every reader and type checker.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kd", "study", "analysis")


def module_files() -> dict[str, Path]:
    """Module name -> file; a package's __init__.py is the package itself (kd.models)."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import, at any depth. For
    `from x import y` both x and x.y are given: y may be a submodule."""
    found = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, one level up per extra dot
                anchor = package.split(".")
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported project module: "file:line" of the first such import}.

    Importing a.b.c also runs a and a.b, so those are edges too, except the importer and
    the packages that contain it: Python has started them before its first line (the
    registration convention, a package importing its submodules at its end and each
    submodule importing the package's registry, relies on that and is no cycle).
    """
    files = module_files()
    graph: dict[str, dict[str, str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        itself_and_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        edges = graph.setdefault(module, {})
        for name, line in imported_names(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            for target in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                if target in files and target not in itself_and_packages:
                    edges.setdefault(target, f"{path.relative_to(ROOT)}:{line}")
    return graph


def strongly_connected(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def shortest_cycle(graph: dict[str, dict[str, str]], group: list[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target in members and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{group} is not a cycle")


def describe(graph: dict[str, dict[str, str]], cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return "\n    ".join(steps)


def test_no_import_cycles():
    graph = import_graph()
    assert "kd.models.text" in graph["kd.models"]  # the walk sees `from kd.models import text`
    groups = [group for group in strongly_connected(graph) if len(group) > 1]
    assert not groups, "import cycles:\n  " + "\n  ".join(
        f"{', '.join(group)} reach each other, e.g.\n    {describe(graph, shortest_cycle(graph, group))}"
        for group in groups)


def test_kd_never_imports_ray_study_or_analysis():
    forbidden = {"ray", "study", "analysis"}
    found = set()
    for module, path in module_files().items():
        if module.split(".")[0] != "kd":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        found |= {(str(path.relative_to(ROOT)), line, name.split(".")[0])
                  for name, line in imported_names(tree, module, path.name == "__init__.py")
                  if name.split(".")[0] in forbidden}
    assert not found, "\n".join(f"{path}:{line} imports {name}" for path, line, name in sorted(found))
