"""The package layers (docs/architecture.md): a module may import its own package and lower layers, never a
higher one, and imports of real3d modules sit at module top (the graph is visible, no hidden cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "real3d"

LAYERS: list[set[str]] = [
    {"errors"},
    {"geometry", "ramps", "state_dict", "cpu_memory", "precision", "_stderr", "config", "layers", "assets"},
    {"io", "render", "audio"},
    {"provenance", "models"},
    {"face", "weights"},
    {"motion"},
    {"backends"},
    {"pipeline"},
    {"eval"},
    {"serve", "train"},
    {"batch"},
    {"cli"},
]
"""Lowest first. Packages in one layer do not import each other."""
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """real3d.face.bfm -> face; real3d.pipeline -> pipeline."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported real3d module, line, at module top) of every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names[:1] if isinstance(node, ast.ImportFrom) else names:
            if name.startswith("real3d."):
                out.append((name, node.lineno, id(node) in top))
    return out


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(SRC.parent).with_suffix("").parts), p) for p in sorted(SRC.rglob("*.py"))]


def violations(rank: dict[str, int] = RANK) -> list[str]:
    """Every upward or sideways import between packages, as 'file:line: a -> b'."""
    found = []
    for module, path in _modules():
        if module == "real3d.__init__":
            continue
        src = _unit(module)
        for target, line, _ in _imports(path):
            dst = _unit(target)
            if dst == src:
                continue
            if dst not in rank or src not in rank:
                found.append(f"{path.relative_to(SRC)}:{line}: {src} -> {dst} (package missing from LAYERS)")
            elif rank[dst] >= rank[src]:
                found.append(f"{path.relative_to(SRC)}:{line}: {src} (layer {rank[src]}) -> {dst} (layer {rank[dst]})")
    return found


def test_every_package_is_in_a_layer():
    packages = {_unit(m) for m, _ in _modules() if m != "real3d.__init__"}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS"


def test_no_import_goes_up_or_sideways():
    assert violations() == []


def test_project_imports_are_at_module_top():
    nested = [f"{p.relative_to(SRC)}:{line}: {t}" for m, p in _modules() for t, line, top in _imports(p) if not top]
    assert nested == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """A face module that imported the pipeline would be reported."""
    bad = SRC / "face" / "_layer_probe.py"
    monkeypatch.setattr(Path, "rglob", lambda self, pat: [bad] if self == SRC else [])
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: "from real3d.pipeline import Pipeline\n")
    assert violations() == [
        f"face/_layer_probe.py:1: face (layer {RANK['face']}) -> pipeline (layer {RANK['pipeline']})"
    ]


@pytest.mark.parametrize("name", sorted(RANK))
def test_layers_name_real_packages(name):
    assert (SRC / name).is_dir() or (SRC / f"{name}.py").is_file(), f"LAYERS names {name}, which does not exist"
