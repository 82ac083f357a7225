"""The house rules of DESIGN.md, checked on the source tree.

Imports only flow downward: hil -> controller -> (cython_ext, hal); sim -> hal;
hal and cython_ext import nothing of ours. A violation fails with the file,
line and import that broke the rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("hil", "controller", "sim", "hal", "cython_ext")
ALLOWED: dict[str, set[str]] = {
    "hil": {"hil", "controller", "hal", "sim", "cython_ext"},
    "controller": {"controller", "cython_ext", "hal"},
    "sim": {"sim", "hal"},
    "hal": {"hal"},
    "cython_ext": {"cython_ext"},
}


def _imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) for every import of one of our layers in ``path``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".pyx", ".pxd"}:
        found = []
        for lineno, line in enumerate(text.splitlines(), 1):
            words = line.replace(",", " ").split()
            if len(words) >= 2 and words[0] in {"import", "from", "cimport"}:
                top = words[1].split(".")[0]
                if top in LAYERS:
                    found.append((lineno, top))
        return found
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return [(line, top) for line, top in found if top in LAYERS]


def _sources(layer: str) -> list[Path]:
    base = ROOT / layer
    return sorted(p for ext in ("*.py", "*.pyx", "*.pxd") for p in base.rglob(ext))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in _sources(layer)
        for line, top in _imported_layers(path)
        if top not in ALLOWED[layer]
    ]
    assert not violations, f"{layer}/ may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(violations)


def test_registry_strings_respect_layers() -> None:
    """Lazy registries name modules as strings; those must respect the rules too."""
    import hil.cli
    import hil.cmd_bench

    for module in (*hil.cli.SUBCOMMAND_MODULES, *hil.cmd_bench.BENCHMARKS.values()):
        assert module.split(".")[0] == "hil", module
