"""The floor of the house: the safety kernel, and the value modules every layer shares.

- :mod:`cython_ext.kernel` -- the safety kernel: every delivery decision passes through it
  (compiled by default; see its docstring). Only ``controller`` imports it.
- :mod:`cython_ext.units` -- the one module for unit conversions (pure Python).
- :mod:`cython_ext.errors` -- the project's one error tree (:class:`~cython_ext.errors.ItbError` and below).
- :mod:`cython_ext.vocabulary` -- the clinical vocabulary: delivery kinds, origins and their
  titration caps, programme limits, reason codes.

The value modules may be imported by every layer. This package imports nothing else of
ours. Importing the package itself does not load the kernel, so the value modules work
before the extension is built.
"""
