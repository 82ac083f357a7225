"""The house rules of DESIGN.md, checked on the source tree.

Imports only flow downward: hil -> controller -> hal; sim -> hal. Beneath every
layer lies the floor, ``cython_ext``: its value modules (units, the error tree,
the clinical vocabulary) may be imported by every layer, and only
``controller`` imports the safety kernel itself. The floor imports nothing
else of ours. A violation fails with the file, line and import that broke the
rule. There is no table of exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("hil", "controller", "sim", "hal", "cython_ext")
#: The floor's value modules: open to every layer.
FLOOR_VALUE_MODULES = ("cython_ext.units", "cython_ext.errors", "cython_ext.vocabulary", "cython_ext.fields")
#: Layers each layer may import besides the floor's value modules.
ALLOWED: dict[str, set[str]] = {
    "hil": {"hil", "controller", "hal", "sim"},
    "controller": {"controller", "cython_ext", "hal"},
    "sim": {"sim", "hal"},
    "hal": {"hal"},
    "cython_ext": {"cython_ext"},
}


def _is_floor_value(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in FLOOR_VALUE_MODULES)


def _imported_layers(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of one of our layers in ``path``."""
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
    return [(line, mod) for line, mod in found if mod.split(".")[0] in LAYERS]


def _sources(layer: str) -> list[Path]:
    base = ROOT / layer
    return sorted(p for ext in ("*.py", "*.pyx", "*.pxd") for p in base.rglob(ext))


def _allowed(layer: str, module: str) -> bool:
    return module.split(".")[0] in ALLOWED[layer] or _is_floor_value(module)


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_downward(layer: str) -> None:
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources(layer)
        for line, module in _imported_layers(path)
        if not _allowed(layer, module)
    ]
    assert not violations, (
        f"{layer}/ may import only {sorted(ALLOWED[layer])} and the floor's value modules "
        f"{list(FLOOR_VALUE_MODULES)}:\n" + "\n".join(violations)
    )


def test_floor_value_modules_import_only_each_other() -> None:
    """The value modules are the floor's floor: they import no kernel and no other layer."""
    for module in FLOOR_VALUE_MODULES:
        path = ROOT / (module.replace(".", "/") + ".py")
        for line, imported in _imported_layers(path):
            assert _is_floor_value(imported), f"{path.relative_to(ROOT)}:{line} imports {imported}"


def test_architecture_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker is not vacuous: a kernel import from hil is seen, a units import is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("from cython_ext import kernel\nfrom cython_ext.units import MS_PER_H\nimport sim.rig\n")
    found = _imported_layers(probe)
    assert [m for _, m in found if not _allowed("hal", m)] == ["cython_ext.kernel", "sim.rig"]


def test_registry_strings_respect_layers() -> None:
    """Lazy registries name modules as strings; those must respect the rules too."""
    import hil.cli
    import hil.cmd_bench

    for module in (*hil.cli.SUBCOMMAND_MODULES, *hil.cmd_bench.BENCHMARKS.values()):
        assert module.split(".")[0] == "hil", module
