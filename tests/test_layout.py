"""The package layout's one rule: every import points one way (see ``ppl_vae/__init__.py``)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["errors", "nn", "poutine", "models", "guides", "io", "infer", "marginal", "training",
          "analysis", "commands"]
SOURCES = {"models": ROOT / "models", "guides": ROOT / "guides"}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ppl_vae" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _files():
    for path in sorted((ROOT / "ppl_vae").rglob("*.py")):
        rel = path.relative_to(ROOT / "ppl_vae").parts
        if len(rel) > 1:
            yield rel[0], path
        elif rel[0] not in ("__init__.py", "__main__.py"):
            yield rel[0][:-3], path
    for name, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            yield name, path


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


@pytest.mark.parametrize("layer,path", list(_files()), ids=lambda v: str(v).split("/work/")[-1])
def test_imports_point_one_way(layer, path):
    own = LAYERS.index(layer)
    bad = [f"{path.name}:{line} imports {mod}" for mod, line in _imports(path)
           if (target := _layer(mod)) is not None and target > own]
    assert not bad, bad


def test_no_relative_imports_leave_their_subpackage():
    for _, path in _files():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level > 1), path
