"""The import structure shows the architecture: plain-torch algorithms at the bottom, Lightning wiring above, the
commands on top. An import that points up, a circle between packages, or a pruning room reaching into the other
fails here (every import counts, also one inside a function)."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.helpers import REPO

LAYERS = [
    {"errors", "quiet", "paths", "seeding", "dropout", "options", "machine"},
    {"data", "metrics", "distill", "quantize", "cards"},
    {"pruning", "generative"},
    {"model_fit", "backbones", "export", "optim"},
    {"datamodules", "modules", "callbacks"},
    {"cli", "gate", "prune_generator", "study", "shipped_configs", "command", "__main__", "__init__"},
]
"""Top-level parts of ``lmshrink`` from the bottom up: a part may import its own layer and those below."""
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def imports() -> list[tuple[str, str]]:
    """(importing module, imported module) for every ``lmshrink`` import of the package."""
    found = []
    for path in (REPO / "lmshrink").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmshrink"):
                names = [node.module] if node.module != "lmshrink" else [f"lmshrink.{a.name}" for a in node.names]
                found += [(module, name) for name in names]
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("lmshrink.")]
    return found


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_every_part_has_a_layer():
    parts = {path.stem if path.is_file() else path.name for path in (REPO / "lmshrink").iterdir()
             if (path.suffix == ".py" or (path.is_dir() and any(path.glob("*.py"))))}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_import_points_up():
    upward = sorted({f"{source} -> {target}" for source, target in imports()
                     if RANK[part(target)] > RANK[part(source)]})
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_circle_between_parts():
    graph = defaultdict(set)
    for source, target in imports():
        if part(source) != part(target):
            graph[part(source)].add(part(target))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    circles = sorted(p for p in list(graph) if reaches(p, p, {p}))
    assert not circles, f"parts on an import circle: {circles}"


def test_pruning_rooms_share_only_the_core():
    """``pruning/encoder`` and ``pruning/decoder`` import the shared core, never each other; the core imports
    neither."""
    wrong = []
    for source, target in imports():
        if not (source.startswith("lmshrink.pruning.") and target.startswith("lmshrink.pruning.")):
            continue
        room = source.split(".")[2] if source.split(".")[2] in ("encoder", "decoder") else "core"
        target_room = target.split(".")[2] if target.split(".")[2] in ("encoder", "decoder") else "core"
        if target_room not in ("core", room):
            wrong.append(f"{source} -> {target}")
    assert not wrong, "pruning rooms crossing:\n" + "\n".join(wrong)


def test_every_package_ships_in_the_wheel():
    """``pyproject.toml`` finds packages by their ``__init__.py``: a folder of modules without one is left out of a
    non-editable install, where its imports then fail (lmshrink.generative was, until this test)."""
    from setuptools import find_packages

    folders = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "lmshrink").rglob("*.py")
               if "_configs" not in path.parts}
    missing = sorted(folders - set(find_packages(str(REPO), include=["lmshrink*"])))
    assert not missing, f"add an __init__.py to: {missing}"
