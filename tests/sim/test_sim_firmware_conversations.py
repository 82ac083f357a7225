"""NE-1000 firmware in Basic mode, conversation by conversation: commands and the replies the manual gives.

Each conversation is played on a fresh simulated pump; the expected replies are written out here by hand
from pump-protocols §1.2-§1.5, never produced by our codec:

- VOL: the value in the volume units, the units set alone; out of range is "?", and no change while pumping.
- DIR: query, set, reverse; STK is accepted, anything else is "?".
- OUT: set TTL output 5 high and read it back; output 4 and level 2 are out of range.
- FUN arguments: phase 42 does not exist on base firmware; the program cannot be edited while it runs.
"""

from __future__ import annotations

import pytest
from sim_helpers import converse

from sim.newera import Ne1000

#: One flat table of ``(conversation, sent, expected)`` rows, played in order by :func:`sim_helpers.converse`.
CONVERSATIONS: tuple[tuple[str, str, str], ...] = (
    ("volume", "0VOL1.5", "00S"),
    ("volume", "0VOL", "00S1.500UL"),
    ("volume", "0VOL ML", "00S"),
    ("volume", "0VOL", "00S1.500ML"),
    ("volume", "0VOL10000", "00S?"),
    ("volume", "0RUN", "00I"),
    ("volume", "0VOL2", "00I?NA"),
    ("direction", "0DIR", "00SINF"),
    ("direction", "0DIRREV", "00S"),
    ("direction", "0DIR", "00SWDR"),
    ("direction", "0DIR INF", "00S"),
    ("direction", "0DIRSTK", "00S"),
    ("direction", "0DIRXYZ", "00S?"),
    ("ttl output", "0OUT51", "00S"),
    ("ttl output", "0OUT5", "00S1"),
    ("ttl output", "0OUT41", "00S?OOR"),
    ("ttl output", "0OUT52", "00S?OOR"),
    ("function arguments", "0FUNJMP5", "00S"),
    ("function arguments", "0FUN", "00SJMP5"),
    ("function arguments", "0FUNJMP42", "00S?OOR"),
    ("function arguments", "0FUNPAS100", "00S?OOR"),
    ("function arguments", "0FUNLOP0", "00S?OOR"),
    ("function arguments", "0FUNSTP3", "00S?"),
    ("function arguments", "0FUNLPS", "00S"),
    ("function arguments", "0FUNRAT", "00S"),
    ("function arguments", "0RUN", "00I"),
    ("function arguments", "0FUNSTP", "00I?NA"),
)


@pytest.mark.parametrize("conversation", sorted({row[0] for row in CONVERSATIONS}))
def test_each_conversation_goes_as_the_manual_says(pump: Ne1000, conversation: str) -> None:
    converse(pump, CONVERSATIONS, conversation)
