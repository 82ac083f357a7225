"""The context-manager half of every link's lifecycle.

A class that has a ``close()`` safe to call more than once mixes in
:class:`ClosesOnExit` and so becomes a context manager that closes on leaving
the ``with`` block, whether it is left normally or by an exception (which is
never swallowed).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosesOnExit:
    """Mixin: ``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what the object holds. Subclasses override it; it must be safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
