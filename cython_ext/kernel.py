"""Selector: ``from cython_ext import kernel`` gives the compiled safety kernel.

The compiled module ``cython_ext._kernel`` is the one the package uses. The
pure-Python twin ``cython_ext._kernel_py`` is used only when asked for, by
setting ``ITB_PURE_PYTHON=1`` before the first import, or explicitly with
:func:`load` (tests and benchmarks). If the compiled module is missing and the
twin was not asked for, importing this module fails with an :class:`ImportError`
that says how to build it: the compiled core is never silently replaced.

``kernel.IMPLEMENTATION`` is ``"compiled"`` or ``"python"``. Every public name of
the chosen implementation is available here (see ``kernel.pyi``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: Environment variable that selects the pure-Python twin when set to ``1``.
PURE_PYTHON_ENV = "ITB_PURE_PYTHON"

_BUILD_HINT = (
    "the compiled safety kernel cython_ext._kernel is not built. Build it with `make test` or "
    "`pip install -e .` (or `python setup.py build_ext --inplace`), or set ITB_PURE_PYTHON=1 to use "
    "the pure-Python twin on purpose (tests only)."
)


def load(implementation: str = "compiled") -> ModuleType:
    """Return one kernel implementation module.

    :param implementation: ``"compiled"`` (``cython_ext._kernel``) or ``"python"`` (the twin).
    :return: the module.
    :raises ImportError: if the compiled module is asked for and is not built.
    :raises ValueError: for any other ``implementation``.
    """
    if implementation == "python":
        return importlib.import_module("cython_ext._kernel_py")
    if implementation != "compiled":
        raise ValueError(f"implementation (={implementation!r}) must be 'compiled' or 'python'")
    try:
        return importlib.import_module("cython_ext._kernel")
    except ImportError as exc:
        raise ImportError(_BUILD_HINT) from exc


def _selected() -> str:
    value = os.environ.get(PURE_PYTHON_ENV, "")
    if value not in ("", "0", "1"):
        raise ImportError(f"{PURE_PYTHON_ENV} (={value!r}) must be '0' or '1'")
    return "python" if value == "1" else "compiled"


_impl = load(_selected())
globals().update({name: getattr(_impl, name) for name in dir(_impl) if not name.startswith("__")})
IMPLEMENTATION: str = _impl.IMPLEMENTATION
