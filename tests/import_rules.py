"""The package's layers and the rules between them, read statically from the source.

Folders read as the data flow, the library below and the applications above. A module may import
its own package and any package on a lower floor; never one above. Every import counts: module
level, inside functions, and module names written as strings for ``importlib``. The test
``tests/test_import_rules.py`` applies these rules to the whole tree.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ros_amf"

# Bottom to top. One floor may hold several packages that do not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("contract",),                # input contract, labels, config and checkpoint formats
    ("bags", "modeling"),         # bag files; networks (pure torch)
    ("data",),                    # datasets, transforms, synthetic scenes and drive bags
    ("runtime",),                 # the inference engine: loading, pre-processing, stages, pipeline
    ("evaluation",),              # metrics, scored through the runtime's own pre/post-processing
    ("training",),                # the one fit() loop and the two tasks
    ("ros",),                     # nodes, conversions, parameters, QoS
    ("replay",),                  # the one rclpy harness, replay benchmarks and reports
    ("apps",),                    # every command-line entry point; imported by nothing
)

# Third-party modules allowed only in some packages.
ONLY_IN: dict[str, tuple[str, ...]] = {
    "rclpy": ("ros", "replay.harness"),
    "ros_amf_msgs": ("ros", "replay.harness"),
    "argparse": ("apps",),
}

# "ros_amf.x.y" or "ros_amf.x.y:attribute" (a function or a class: "ros_amf.ros.node:PerceptionNode")
_MODULE_STRING = re.compile(rf"^{PACKAGE}(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")


def floor_of(package: str) -> int:
    for index, names in enumerate(FLOORS):
        if package in names:
            return index
    raise KeyError(f"package '{package}' has no floor in tests/import_rules.py FLOORS; add it there.")


@dataclass(frozen=True)
class Import:
    source: str     # dotted module that imports
    target: str     # dotted module imported
    line: int
    how: str        # "import", "function import" or "string"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module ``path`` imports: statements anywhere in the file and dotted module strings."""
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []
    top_level = {id(node) for node in tree.body}

    def how(node: ast.AST) -> str:
        return "import" if id(node) in top_level else "function import"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, node.lineno, how(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(source, module, node.lineno, how(node)))
            # "from pkg import submodule" imports the submodule too
            found += [Import(source, f"{module}.{alias.name}", node.lineno, how(node)) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.append(Import(source, node.value.split(":")[0], node.lineno, "string"))
    return found


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def _allowed_in(module: str, places: tuple[str, ...]) -> bool:
    inner = module[len(PACKAGE) + 1:]
    return any(inner == place or inner.startswith(place + ".") for place in places)


def violations(root: Path) -> list[str]:
    """One sentence per broken rule in the tree under ``root`` (the folder holding ``ros_amf/``)."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    modules = sorted((root / PACKAGE).rglob("*.py"))
    for path in modules:
        for imp in imports_of(path, root):
            where = f"{path.relative_to(root)}:{imp.line}"
            mine, theirs = _package_of(imp.source), _package_of(imp.target)
            key = (where, theirs or imp.target.split(".")[0])
            if key in seen:     # one sentence per line and package, not per imported name
                continue
            seen.add(key)
            if theirs is not None and mine is not None and theirs != mine:
                if theirs == "apps":
                    problems.append(f"{where} imports {imp.target}: nothing may import apps/.")
                elif floor_of(theirs) >= floor_of(mine):
                    problems.append(f"{where} ({imp.how}) imports {imp.target}, which is on floor "
                                    f"{floor_of(theirs)} ({theirs}/), not below {mine}/ (floor {floor_of(mine)}).")
            if theirs is None and mine is None and imp.target.split(".")[0] == PACKAGE and imp.source != PACKAGE:
                problems.append(f"{where} imports the package root {imp.target}; import a module of a layer.")
            top = imp.target.split(".")[0]
            if top in ONLY_IN and not _allowed_in(imp.source, ONLY_IN[top]):
                problems.append(f"{where} imports {top}, which only {', '.join(ONLY_IN[top])} may import.")
    return problems


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (existing ones only), for cycle checks."""
    names = {module_name(p, root) for p in (root / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in (root / PACKAGE).rglob("*.py"):
        source = module_name(path, root)
        graph[source] = {i.target for i in imports_of(path, root) if i.target in names and i.target != source}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among modules (each reported once, as the path that closes it)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found
