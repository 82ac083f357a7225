"""The safety kernel: every delivery decision passes through it.

- :mod:`cython_ext.kernel` -- the kernel (compiled by default; see its docstring).
- :mod:`cython_ext.units` -- the one module for unit conversions (pure Python).
- :mod:`cython_ext.errors` -- the project's one error tree (:class:`~cython_ext.errors.ItbError` and below).

This package imports nothing else of ours. Importing the package itself does not
load the kernel, so ``cython_ext.units`` works before the extension is built.
"""
