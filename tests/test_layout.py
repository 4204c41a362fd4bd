"""The folder layout holds: imports only point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]

# Lowest first; a module may import from its own layer's folder and any layer below.
# operators/ and connectors/ share a rank but may not import each other: the dataflow
# wires steps to sources and sinks.
LAYERS = [
    ("facemoment.core", 1),
    ("facemoment.formats", 2),
    ("facemoment.runtime", 3),
    ("operators", 4),
    ("connectors", 4),
    ("dataflows", 5),
    ("facemoment.tools", 6),
]


def _layer(module: str) -> Optional[Tuple[str, int]]:
    for prefix, rank in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def _product_modules() -> Iterator[Tuple[str, Path]]:
    for folder in ("facemoment", "operators", "connectors", "dataflows"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _imports(path: Path) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from facemoment import x` imports facemoment.x
                yield node.lineno, f"{node.module}.{alias.name}"


def upward_imports() -> List[str]:
    problems = []
    for module, path in _product_modules():
        own = _layer(module)
        if own is None:
            continue
        for lineno, target in _imports(path):
            other = _layer(target)
            if other is None or other[0] == own[0]:
                continue
            if other[1] > own[1] or (other[1] == own[1] and other[0] != own[0]):
                problems.append(f"{path.relative_to(REPO)}:{lineno} imports {target} ({other[0]} is not below {own[0]})")
    return problems


def test_no_module_imports_a_layer_above_it():
    assert upward_imports() == []


def test_layer_rule_catches_an_upward_import(tmp_path, monkeypatch):
    bad = tmp_path / "facemoment" / "core" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from facemoment.tools.cli import main\nimport connectors.clips\n")
    found = [target for _line, target in _imports(bad) if _layer(target) and _layer(target)[1] > 1]
    assert found == ["facemoment.tools.cli", "facemoment.tools.cli.main", "connectors.clips"]


# Small modules with names that explain themselves: a module past this is doing two jobs.
MAX_MODULE_LINES = 500


def long_modules(limit: int = MAX_MODULE_LINES) -> List[str]:
    long = []
    for _module, path in _product_modules():
        count = len(path.read_text().splitlines())
        if count > limit:
            long.append(f"{path.relative_to(REPO)}: {count} lines")
    return long


def test_no_product_module_is_over_the_line_limit():
    assert long_modules() == []


def test_line_limit_names_a_long_module():
    # The same check with a limit every non-empty module exceeds.
    found = long_modules(limit=0)
    assert any(entry.startswith("dataflows/facemoment.py: ") for entry in found)


def private_bytewax_imports() -> List[str]:
    found = []
    for _module, path in _product_modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "bytewax"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bytewax":
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if any(part.startswith("_") for part in name.split(".")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    return found


def test_no_product_module_uses_private_bytewax_names():
    # docs/architecture.md ("Bytewax API") says why each close use of Bytewax is public.
    assert private_bytewax_imports() == []
