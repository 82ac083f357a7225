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


def send(pump: Ne1000, *texts: str) -> None:
    """Send Basic-mode packets in turn, as set-up: each reply must be framed, its content is not checked."""
    for text in texts:
        body(pump, text)


def converse(pump: Ne1000, table: tuple[tuple[str, str, str], ...], name: str) -> None:
    """Play conversation ``name`` of a flat ``(conversation, sent, expected)`` table, row by row in order."""
    rows = [(sent, expected) for conversation, sent, expected in table if conversation == name]
    assert rows, f"no conversation {name!r}"
    for step, (sent, expected) in enumerate(rows, 1):
        reply = body(pump, sent)
        assert reply == expected, f"{name}, step {step}: {sent!r} answered {reply!r}, expected {expected!r}"
