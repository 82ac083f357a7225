"""Build the compiled safety kernel.

Every Cython module in ``cython_ext/`` is compiled here, with the compiler
directives set in one place. Bounds checking stays on in the safety core and
``cdivision`` stays off, so a division by zero raises instead of returning junk.
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

sources = sorted(str(p) for p in Path("cython_ext").glob("*.pyx"))
setup(ext_modules=cythonize(sources, compiler_directives=DIRECTIVES) if sources else [])
