"""The compiled kernel is what the package loads; the twin only on request."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cython_ext import kernel


def test_compiled_module_is_loaded_by_default():
    if os.environ.get("ITB_PURE_PYTHON") == "1":
        pytest.skip("this run asked for the pure-Python twin on purpose")
    assert kernel.IMPLEMENTATION == "compiled"
    assert kernel.SafetyKernel.__module__ == "cython_ext._kernel"
    assert kernel._impl.__file__.endswith((".so", ".pyd"))


def test_load_gives_each_implementation():
    assert kernel.load("compiled").IMPLEMENTATION == "compiled"
    assert kernel.load("python").IMPLEMENTATION == "python"
    with pytest.raises(ValueError):
        kernel.load("fast")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("ITB_PURE_PYTHON", None) if "ITB_PURE_PYTHON" not in env else None
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60)


def test_env_selects_twin():
    result = _run("from cython_ext import kernel; print(kernel.IMPLEMENTATION)", ITB_PURE_PYTHON="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_missing_compiled_module_fails_loudly_with_build_hint():
    code = (
        "import sys; sys.modules['cython_ext._kernel'] = None\n"
        "try:\n"
        "    from cython_ext import kernel\n"
        "except ImportError as exc:\n"
        "    print('IMPORT-ERROR', exc)\n"
        "else:\n"
        "    print('LOADED', kernel.IMPLEMENTATION)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("IMPORT-ERROR")
    assert "make test" in result.stdout and "pip install -e ." in result.stdout


def test_bad_env_value_rejected():
    result = _run("from cython_ext import kernel", ITB_PURE_PYTHON="yes")
    assert result.returncode != 0
    assert "ITB_PURE_PYTHON" in result.stderr


def test_both_implementations_export_the_same_names():
    from cython_ext import _common

    public = set(_common.__all__) | {"SafetyKernel", "Ledger", "Programme", "IMPLEMENTATION"}
    for implementation in ("compiled", "python"):
        module = kernel.load(implementation)
        missing = {name for name in public if not hasattr(module, name)}
        assert not missing, (implementation, missing)
        for name in _common.__all__:
            assert getattr(module, name) is getattr(_common, name)


def test_stub_documents_names_both_implementations_have():
    import ast
    from pathlib import Path

    stub = Path(kernel.__file__).with_name("kernel.pyi")
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    reexported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
                  and (n.module or "").startswith("cython_ext") for a in n.names}
    assert {"PatientCaps", "DeliveryKind"} <= reexported  # the shared value objects, defined once
    names |= reexported
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for implementation in ("compiled", "python"):
        module = kernel.load(implementation)
        assert not {name for name in names if not hasattr(module, name)}, implementation
        for cls in ("Programme", "Ledger", "SafetyKernel"):
            methods = {b.name for b in classes[cls].body if isinstance(b, ast.FunctionDef)}
            assert not {m for m in methods if not hasattr(getattr(module, cls), m)}, (implementation, cls)
