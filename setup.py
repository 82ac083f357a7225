"""Build the compiled safety kernel and the cohort plant's compiled step.

Every Cython module in ``cython_ext/`` and ``sim/`` is compiled here, with the
compiler directives set in one place. Bounds checking stays on in the safety core
and ``cdivision`` stays off, so a division by zero raises instead of returning junk;
the plant model's step (``sim/_cohort_step.pyx``, floats, not dosing arithmetic)
turns them off in its own header.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import setup

DIRECTIVES = {
    "language_level": "3",
    "embedsignature": True,
    "boundscheck": True,
    "wraparound": True,
    "cdivision": False,
    "initializedcheck": True,
}

sources = sorted(str(p) for folder in ("cython_ext", "sim") for p in Path(folder).glob("*.pyx"))
setup(ext_modules=cythonize(sources, compiler_directives=DIRECTIVES) if sources else [])
