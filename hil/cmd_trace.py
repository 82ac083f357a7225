"""``itb trace``: recorded serial sessions (the format of :mod:`hal.trace`).

``itb trace replay TRACE`` plays the host's side of a recorded session (every
``TX`` chunk, at its recorded time on a virtual clock) against a fresh simulated
NE-1000 and compares what the simulator answers with the recorded ``RX`` bytes,
as python-can's ``can.player`` plays a log onto a bus. A session recorded against
the simulator in virtual time (``itb run``'s ``serial-trace.txt``) replays byte for
byte, so a change of the simulator's behaviour shows as the first reply that
differs; one recorded against a real pump shows where the simulator and the pump
disagree.

``itb trace replay TRACE --check NEW`` compares a new run's trace with the
recorded one instead: the same bytes sent and received, in the same order
(timing and chunking aside).

Exit status: 0 the replies (or both traces) agree, 1 they differ (the first
difference is printed, with the line numbers), 2 an unreadable trace.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from cython_ext import fields
from hil.cli_options import add_command_group

#: Bytes of context shown either side of a difference.
CONTEXT_BYTES = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb trace`` and its ``replay`` subcommand."""
    actions = add_command_group(subparsers, "trace", "replay or compare recorded serial traces",
                                "Recorded serial sessions (hal.transport's trace format).")
    replay = actions.add_parser(
        "replay", help="play a recorded session against the simulator, or check a new trace against it",
        description="Play TRACE's host bytes against a simulated NE-1000 in virtual time and compare its replies "
                    "with the recorded ones; with --check, compare NEW with TRACE.")
    replay.add_argument("trace", metavar="TRACE", help="a recorded serial trace (serial-trace.txt)")
    replay.add_argument("--check", metavar="NEW", default=None, help="compare this new trace with TRACE instead")
    replay.add_argument("--seed", type=fields.int_arg("--seed", *fields.SEED_RANGE), default=0,
                        help="simulator seed (as the recorded run's)")
    replay.add_argument("--bias-pct", type=fields.float_arg("--bias-pct", -50, 50, "%"), default=0.0,
                        help="simulated delivery bias, %% (as recorded)")
    replay.add_argument("--syringe-ml", type=fields.decimal_arg("--syringe-ml", 0, 1000, "mL", low_open=True),
                        default="1000", help="simulated syringe volume, mL (itb run's: 1000)")
    replay.add_argument("--diameter-mm", type=fields.decimal_arg("--diameter-mm", "0.1", 50, "mm"), default="4.699",
                        help="simulated syringe diameter at power-up, mm (itb run's: the scenario's [pump] "
                             "syringe_diameter_mm, default 4.699)")
    replay.add_argument("--json", action="store_true", help="print the result as one JSON document (itb.trace/1)")
    replay.set_defaults(func=_replay)


@dataclass(frozen=True)
class Difference:
    """Where two byte streams first differ.

    :ivar direction: ``TX`` or ``RX``.
    :ivar offset: byte offset in that direction's stream.
    :ivar expected: the recorded bytes around it.
    :ivar got: the other side's bytes around it.
    :ivar line: the recorded trace's line holding that byte (0 past its end).
    """

    direction: str
    offset: int
    expected: bytes
    got: bytes
    line: int

    def text(self) -> str:
        """One line for a person."""
        return (f"{self.direction} differs at byte {self.offset} (recorded line {self.line or 'past the end'}): "
                f"recorded {self.expected.hex(' ')} |{self.expected!r}|, got {self.got.hex(' ')} |{self.got!r}|")


def first_difference(direction: str, expected: bytes, got: bytes, recorded: Any) -> Difference | None:
    """The first byte where ``got`` differs from ``expected`` (a length difference counts), or None."""
    if expected == got:
        return None
    offset = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    seen, line = 0, 0
    for event in recorded.events:
        if event.direction == direction:
            if seen + len(event.data) > offset:
                line = event.line
                break
            seen += len(event.data)
    lo = max(0, offset - CONTEXT_BYTES)
    return Difference(direction, offset, expected[lo:offset + CONTEXT_BYTES], got[lo:offset + CONTEXT_BYTES], line)


def replay_against_simulator(recorded: Any, *, seed: int = 0, bias_pct: float = 0.0, syringe_ml: str = "1000",
                             diameter_mm: str = "4.699") -> bytes:
    """Send the recorded ``TX`` chunks to a fresh simulated NE-1000 at their recorded times; return its replies.

    :param recorded: a :class:`hal.trace.Trace`.
    :return: every byte the simulator sent back, in order.
    """
    import serial

    from hal.clock import NS_PER_S
    from sim.clock import VirtualClock
    from sim.rig import simulated_pump

    clock = VirtualClock()
    replies = bytearray()
    with simulated_pump("inprocess", clock=clock, seed=seed, bias_pct=bias_pct, syringe_volume_ml=syringe_ml,
                        syringe_diameter_mm=diameter_mm) as rig:
        port = serial.serial_for_url(rig.url, timeout=0)
        try:
            for event in recorded.data():
                clock.advance_to_ns(round(event.elapsed_s * NS_PER_S))
                if event.direction == "TX":
                    port.write(event.data)
                replies += port.read(port.in_waiting or 0)
            replies += port.read(port.in_waiting or 0)
        finally:
            port.close()
    return bytes(replies)


def _replay(args: argparse.Namespace) -> int:
    from hal.trace import read_trace
    from hil.cli import ExitStatus
    from hil.output import document, dump

    recorded = read_trace(args.trace)
    if args.check is not None:
        new = read_trace(args.check)
        differences = [first_difference(d, recorded.stream(d), new.stream(d), recorded) for d in ("TX", "RX")]
        mode = f"checked {args.check} against it"
    else:
        got = replay_against_simulator(recorded, seed=args.seed, bias_pct=args.bias_pct, syringe_ml=args.syringe_ml,
                                       diameter_mm=args.diameter_mm)
        differences = [first_difference("RX", recorded.stream("RX"), got, recorded)]
        mode = "replayed its host bytes against a simulated NE-1000"
    found = [d for d in differences if d is not None]
    sent = len(recorded.stream("TX"))
    if args.json:
        dump(document("itb.trace/1", passed=not found, error=None, trace=args.trace, check=args.check,
                      tx_bytes=sent, rx_bytes=len(recorded.stream("RX")),
                      differences=[{"direction": d.direction, "offset": d.offset, "line": d.line,
                                    "expected_hex": d.expected.hex(" "), "got_hex": d.got.hex(" ")} for d in found]),
             sys.stdout)
    else:
        print(f"{args.trace}: {len(recorded.events)} lines, {sent} bytes sent; {mode}")
        for difference in found:
            print(difference.text())
        print("the same bytes" if not found else "DIFFERENT")
    return int(ExitStatus.OK if not found else ExitStatus.CHECK_FAILED)
