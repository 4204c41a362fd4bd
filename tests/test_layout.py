"""The folder layout holds: imports only point down the layers, and never in a circle.

Every rule is a function of a source tree (`root`); the self-checks run the same
functions on a small tree written for them, so they test the rule that guards the repo.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first; a module may import from its own layer's folder and any layer below.
# operators/ and connectors/ share a rank but may not import each other: the dataflow
# wires steps to sources and sinks. bench/ and scripts/ sit on top: they drive the
# product, and nothing in it imports them (or one the other).
LAYERS = [
    ("facemoment.core", 1),
    ("facemoment.formats", 2),
    ("facemoment.runtime", 3),
    ("operators", 4),
    ("connectors", 4),
    ("dataflows", 5),
    ("facemoment.tools", 6),
    ("bench", 7),
    ("scripts", 7),
]
FOLDERS = ("facemoment", "operators", "connectors", "dataflows", "bench", "scripts")

# Import cycles known when this rule came in, each to be removed once broken (an entry
# that no longer matches a cycle fails the test, so the list cannot go stale):
KNOWN_CYCLES: List[Set[str]] = []


def _layer(module: str) -> Optional[Tuple[str, int]]:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def _product_modules(root: Path = REPO) -> Iterator[Tuple[str, Path]]:
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _package(module: str, path: Path) -> List[str]:
    parts = module.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST) -> List[ast.stmt]:
    """Every import the module runs, at any depth, in source order; not those under
    `if TYPE_CHECKING:`."""
    found: List[ast.stmt] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if _type_checking_only(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _imports(path: Path, module: str = "") -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in `path`; relative imports are
    resolved against `module`, the dotted name of `path`."""
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
            continue
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            package = _package(module, path)
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if node.module:
            yield node.lineno, source
        for alias in node.names:  # `from facemoment import x` imports facemoment.x
            yield node.lineno, f"{source}.{alias.name}"


def upward_imports(root: Path = REPO) -> List[str]:
    problems = []
    for module, path in _product_modules(root):
        own = _layer(module)
        if own is None:
            continue
        for lineno, target in _imports(path, module):
            other = _layer(target)
            if other is None or other[0] == own[0]:
                continue
            if other[1] > own[1] or (other[1] == own[1] and other[0] != own[0]):
                problems.append(f"{path.relative_to(root)}:{lineno} imports {target} ({other[0]} is not below {own[0]})")
    return problems


def _import_graph(root: Path = REPO) -> Dict[str, Set[str]]:
    """Module -> the modules of the tree it imports (a name resolves to its longest module prefix)."""
    paths = dict(_product_modules(root))
    graph: Dict[str, Set[str]] = {module: set() for module in paths}
    for module, path in paths.items():
        for _lineno, target in _imports(path, module):
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                name = ".".join(parts[:end])
                if name in paths:
                    if name != module:
                        graph[module].add(name)
                    break
    return graph


def import_cycles(root: Path = REPO) -> List[Set[str]]:
    """Groups of modules that import each other, directly or round a circle (imports
    inside functions count: they hold the modules together all the same)."""
    graph = _import_graph(root)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[Set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        # Tarjan's strongly connected components, iteratively (no recursion limit).
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(component)
    return cycles


def test_no_module_imports_a_layer_above_it():
    assert upward_imports() == []


def test_no_import_cycles_but_the_known_ones():
    cycles = import_cycles()
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in cycles] == [], "a known cycle is gone: remove it from KNOWN_CYCLES"


def _tree(root: Path, files: Dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_layer_rule_catches_upward_imports_absolute_and_relative(tmp_path):
    root = _tree(
        tmp_path,
        {
            "facemoment/core/bad.py": "from facemoment.tools.cli import main\nimport connectors.clips\n",
            "facemoment/core/sneaky.py": "from ..tools import cli\nfrom ..runtime.cluster import workers\n",
            "facemoment/core/fine.py": "from . import bad\nfrom .bad import main\nimport numpy\n",
            "operators/steps.py": "import connectors.clips\n",
            "dataflows/flow.py": "from bench import run\n",
            "bench/run.py": "import scripts.tool\nfrom facemoment.tools import cli\n",
        },
    )
    assert upward_imports(root) == [
        "facemoment/core/bad.py:1 imports facemoment.tools.cli (facemoment.tools is not below facemoment.core)",
        "facemoment/core/bad.py:1 imports facemoment.tools.cli.main (facemoment.tools is not below facemoment.core)",
        "facemoment/core/bad.py:2 imports connectors.clips (connectors is not below facemoment.core)",
        "facemoment/core/sneaky.py:1 imports facemoment.tools (facemoment.tools is not below facemoment.core)",
        "facemoment/core/sneaky.py:1 imports facemoment.tools.cli (facemoment.tools is not below facemoment.core)",
        "facemoment/core/sneaky.py:2 imports facemoment.runtime.cluster (facemoment.runtime is not below facemoment.core)",
        "facemoment/core/sneaky.py:2 imports facemoment.runtime.cluster.workers (facemoment.runtime is not below facemoment.core)",
        "operators/steps.py:1 imports connectors.clips (connectors is not below operators)",
        "dataflows/flow.py:1 imports bench (bench is not below dataflows)",
        "dataflows/flow.py:1 imports bench.run (bench is not below dataflows)",
        "bench/run.py:1 imports scripts.tool (scripts is not below bench)",
    ]


def test_cycle_rule_finds_circles_late_imports_included_and_not_type_hints(tmp_path):
    root = _tree(
        tmp_path,
        {
            "facemoment/__init__.py": "",
            "facemoment/core/__init__.py": "",
            "facemoment/core/a.py": "from facemoment.core import b\n",
            "facemoment/core/b.py": "def late():\n    from facemoment.core.c import thing\n",
            "facemoment/core/c.py": "from .a import x\n",
            "facemoment/core/d.py": "from facemoment.core.a import x\n",
            "facemoment/core/e.py": (
                "from typing import TYPE_CHECKING\nimport facemoment.core.d\n"
                "if TYPE_CHECKING:\n    from facemoment.core.e2 import T\n"
            ),
            "facemoment/core/e2.py": "import facemoment.core.e\n",
            "connectors/x.py": "import connectors.y\n",
            "connectors/y.py": "import connectors.x\n",
        },
    )
    cycles = sorted(sorted(c) for c in import_cycles(root))
    assert cycles == [
        ["connectors.x", "connectors.y"],
        ["facemoment.core.a", "facemoment.core.b", "facemoment.core.c"],
    ]


# Small modules with names that explain themselves: a module past this is probably doing
# two jobs. Shown in review as a warning, not a failure.
MAX_MODULE_LINES = 500


class LongModule(UserWarning):
    """A product module over MAX_MODULE_LINES lines."""


def long_modules(limit: int = MAX_MODULE_LINES, root: Path = REPO) -> List[str]:
    long = []
    for _module, path in _product_modules(root):
        count = len(path.read_text().splitlines())
        if count > limit:
            long.append(f"{path.relative_to(root)}: {count} lines")
    return long


def warn_long_modules(limit: int = MAX_MODULE_LINES, root: Path = REPO) -> List[str]:
    """One LongModule warning per module over `limit` (pytest lists them in its summary)."""
    long = long_modules(limit, root)
    for entry in long:
        warnings.warn(f"{entry} (over {limit}): is it doing two jobs?", LongModule)
    return long


def test_long_modules_are_listed_for_review():
    warn_long_modules()  # a warning for the reviewer, never a failure


def test_line_limit_warns_of_a_long_module(tmp_path):
    root = _tree(tmp_path, {"operators/long.py": "x = 1\n" * 11, "operators/short.py": "x = 1\n" * 10})
    with pytest.warns(LongModule, match=r"operators/long\.py: 11 lines") as caught:
        assert warn_long_modules(limit=10, root=root) == ["operators/long.py: 11 lines"]
    assert len(caught) == 1


def private_bytewax_imports(root: Path = REPO) -> List[str]:
    found = []
    for _module, path in _product_modules(root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "bytewax"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bytewax":
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if any(part.startswith("_") for part in name.split(".")):
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    return found


def test_no_product_module_uses_private_bytewax_names():
    # docs/architecture.md ("Bytewax API") says why each close use of Bytewax is public.
    assert private_bytewax_imports() == []


def test_private_bytewax_rule_names_the_import(tmp_path):
    root = _tree(tmp_path, {"connectors/src.py": "from bytewax.inputs import _private\nfrom bytewax.inputs import batch\n"})
    assert private_bytewax_imports(root) == ["connectors/src.py:1 imports bytewax.inputs._private"]
