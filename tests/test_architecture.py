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
    "hil": {"hil", "controller", "hal", "sim"},
    "controller": {"controller", "cython_ext", "hal"},
    "sim": {"sim", "hal"},
    "hal": {"hal"},
    "cython_ext": {"cython_ext"},
}


#: Narrow, documented exceptions to the table: (folder prefix, module prefix, why).
EXCEPTIONS: tuple[tuple[str, str, str], ...] = (
    ("hil/", "cython_ext.units", "conversions live in one module; every layer that converts uses it"),
    ("hil/", "cython_ext.errors", "the units module's error type, translated at the boundary"),
    ("hil/bench/", "cython_ext", "a benchmark of the kernel must import what it measures"),
)


def _excepted(path: Path, module: str) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(
        rel.startswith(folder) and (module == prefix or module.startswith(prefix + "."))
        for folder, prefix, _why in EXCEPTIONS
    )


def _imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of one of our layers in ``path``, minus the documented exceptions."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".pyx", ".pxd"}:
        found = []
        for lineno, line in enumerate(text.splitlines(), 1):
            words = line.replace(",", " ").split()
            if len(words) >= 2 and words[0] in {"import", "from", "cimport"}:
                if words[1].split(".")[0] in LAYERS:
                    found.append((lineno, words[1]))
        return found
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [(line, mod) for line, mod in found if mod.split(".")[0] in LAYERS and not _excepted(path, mod)]


def _sources(layer: str) -> list[Path]:
    base = ROOT / layer
    return sorted(p for ext in ("*.py", "*.pyx", "*.pxd") for p in base.rglob(ext))


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources(layer)
        for line, module in _imported_layers(path)
        if module.split(".")[0] not in ALLOWED[layer]
    ]
    assert not violations, f"{layer}/ may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(violations)


def test_registry_strings_respect_layers() -> None:
    """Lazy registries name modules as strings; those must respect the rules too."""
    import hil.cli
    import hil.cmd_bench

    for module in (*hil.cli.SUBCOMMAND_MODULES, *hil.cmd_bench.BENCHMARKS.values()):
        assert module.split(".")[0] == "hil", module
