"""The layers import downwards only: ops (kernels/) < model (model/) < service (service/).

Read from the source with ast, so an import inside a function (a lazy one) counts as much as one at the
top: kernels/ imports nothing from model/ or service/, model/ nothing from service/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the first-party packages it must never import
FORBIDDEN = {"kernels": ("model", "service", "loadtests"), "model": ("service", "loadtests")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            out.append((node.lineno, node.module or ""))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_from_the_layers_above(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if module.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_the_step_paths_are_in_the_model_and_the_kernels_are_ops_only() -> None:
    """The fast-step choices moved to model/fast_path; kernels/ holds the ops, their dispatch and scripts."""
    for name in ("runner", "cpu_path", "cuda_graphs", "workload", "fused_core"):
        assert not (ROOT / "kernels" / f"{name}.py").exists(), name
    for name in ("runner", "cpu_path", "cuda_graphs", "workload"):
        assert (ROOT / "model" / "fast_path" / f"{name}.py").exists(), name


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import torch\n\ndef f():\n    from model.gram import GRAM\n    import service.app\n")
    assert [m for _, m in imported_modules(source)] == ["torch", "model.gram", "service.app"]
