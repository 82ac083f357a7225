"""``itb bench serial``: round-trip time of a status query to the simulated pump over a pty.

A client opens the pty like a real port and times ``0\\r`` -> ``STX 00S ETX``
(2 + 5 bytes), first unpaced (as fast as the pty and the service thread go;
the same over TCP for comparison), then paced at 19200 baud 8N1, where the
ideal is the wire time of both packets: ``7 bytes x 10 bits / 19200 baud =
3.646 ms``. The paced round trip is measured twice: with raw pyserial, and
through the HAL driver (``Ne1000Driver.read_status``: transaction layer,
framing, matching), which is what the controller pays. Both are reported as a
ratio to the ideal; the target (at most 1.15) applies to the driver's.

The device runs on the real clock; every reply is checked byte for byte (the
driver checks its own).
"""

from __future__ import annotations

import argparse
import statistics
import time

import serial

from hal.clock import SystemClock
from hal.newera.driver import Ne1000Driver
from hal.pump import PumpState
from cython_ext.errors import CommunicationError
from sim.endpoints import BITS_PER_BYTE, PtyEndpoint, TcpEndpoint
from sim.newera import Ne1000

REQUEST = b"0\r"
REPLY = b"\x0200S\x03"
PACED_BAUD = 19200
#: Largest acceptable paced round trip, as a multiple of the ideal wire time.
TARGET_RATIO = 1.15


def wire_time_s(request: bytes, reply: bytes, baud: int) -> float:
    """Time both packets occupy an 8N1 line at ``baud``, s."""
    return (len(request) + len(reply)) * BITS_PER_BYTE / baud


def measure_round_trips(pace_baud: int | None, repetitions: int, warmup: int = 20, *, link: str = "pty") -> list[float]:
    """Round-trip times of ``repetitions`` status queries over a fresh endpoint, s.

    :param pace_baud: pace the simulator at this baud (None: unpaced).
    :param link: ``"pty"`` or ``"tcp"``.
    :raises CommunicationError: when a reply is not the expected bytes.
    """
    device = Ne1000(SystemClock(), power_on_alarm=False)
    times: list[float] = []
    endpoint_cls = PtyEndpoint if link == "pty" else TcpEndpoint
    with endpoint_cls(device, pace_baud=pace_baud) as endpoint:
        port = serial.serial_for_url(endpoint.url, baudrate=pace_baud or 19200, timeout=2)
        try:
            for index in range(warmup + repetitions):
                start = time.perf_counter()
                port.write(REQUEST)
                reply = port.read_until(b"\x03")
                elapsed = time.perf_counter() - start
                if reply != REPLY:
                    raise CommunicationError(f"status query got {reply!r}, expected {REPLY!r}")
                if index >= warmup:
                    times.append(elapsed)
        finally:
            port.close()
    return times


def measure_driver_round_trips(pace_baud: int, repetitions: int, warmup: int = 20) -> list[float]:
    """Round-trip times of ``repetitions`` driver status reads over a fresh paced pty endpoint, s.

    :raises CommunicationError: when the pump does not report itself stopped.
    """
    device = Ne1000(SystemClock(), power_on_alarm=False)
    times: list[float] = []
    with PtyEndpoint(device, pace_baud=pace_baud) as endpoint:
        with Ne1000Driver.open(endpoint.url, baudrate=pace_baud, timeout_s=2) as driver:
            for index in range(warmup + repetitions):
                start = time.perf_counter()
                status = driver.read_status()
                elapsed = time.perf_counter() - start
                if status.state is not PumpState.STOPPED or status.alarm is not None:
                    raise CommunicationError(f"status read gave {status}, expected stopped without alarm")
                if index >= warmup:
                    times.append(elapsed)
    return times


def _summary(prefix: str, times_s: list[float]) -> dict[str, float]:
    ordered = sorted(times_s)
    return {
        f"{prefix}_median_ms": round(statistics.median(ordered) * 1000, 4),
        f"{prefix}_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 4),
        f"{prefix}_max_ms": round(ordered[-1] * 1000, 4),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Measure unpaced and paced round trips; return the figures (times in ms)."""
    repetitions = 50 if getattr(args, "quick", False) else 500
    unpaced = measure_round_trips(None, repetitions)
    unpaced_tcp = measure_round_trips(None, repetitions, link="tcp")
    paced = measure_round_trips(PACED_BAUD, repetitions)
    driver_paced = measure_driver_round_trips(PACED_BAUD, repetitions)
    ideal_s = wire_time_s(REQUEST, REPLY, PACED_BAUD)
    ratio = statistics.median(paced) / ideal_s
    driver_ratio = statistics.median(driver_paced) / ideal_s
    return {
        "repetitions": repetitions,
        "request_bytes": len(REQUEST),
        "reply_bytes": len(REPLY),
        **_summary("unpaced_rtt", unpaced),
        **_summary("unpaced_tcp_rtt", unpaced_tcp),
        **_summary("paced_19200_rtt", paced),
        "paced_19200_wire_time_ms": round(ideal_s * 1000, 4),
        "paced_19200_ratio_to_wire_time": round(ratio, 4),
        **_summary("driver_paced_19200_rtt", driver_paced),
        "driver_paced_19200_ratio_to_wire_time": round(driver_ratio, 4),
        "paced_19200_target_ratio": TARGET_RATIO,
        "paced_19200_within_target": ratio <= TARGET_RATIO,
        "driver_paced_19200_within_target": driver_ratio <= TARGET_RATIO,
    }
