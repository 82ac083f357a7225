"""Small helpers shared by the simulator tests."""

from __future__ import annotations

from sim.newera import Ne1000


def ask(pump: Ne1000, text: str) -> bytes:
    """Send one Basic-mode packet and return the raw reply."""
    return pump.receive(text.encode("latin-1") + b"\r")


def body(pump: Ne1000, text: str) -> str:
    """Send one Basic-mode packet and return the reply between STX and ETX."""
    reply = ask(pump, text)
    assert reply[:1] == b"\x02" and reply[-1:] == b"\x03", reply
    return reply[1:-1].decode("ascii")
