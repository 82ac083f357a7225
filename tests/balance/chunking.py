"""The chunking property every balance deframer must have, written once for both codecs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def fed_whole_and_in_chunks(make_deframer: Callable[[], Any], data: bytes, chunk: int) -> tuple[list[Any], list[Any]]:
    """What one fresh deframer finds in ``data`` fed at once, and what another finds fed ``chunk`` bytes at a time.

    A deframer that is independent of how the bytes arrive gives the same two lists.
    """
    whole = make_deframer().feed(data)
    deframer = make_deframer()
    pieces: list[Any] = []
    for start in range(0, len(data), chunk):
        pieces.extend(deframer.feed(data[start : start + chunk]))
    return whole, pieces
