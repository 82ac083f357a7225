"""Measure NE-1000 exchange times on a port (not a test: timing belongs outside pytest).

Usage, against a simulated pump paced at 19200 baud in another process::

    .venv/bin/itb sim serve --link pty --baud 19200 &      # prints the /dev/pts/N path
    .venv/bin/python tests/hal/measure_exchange.py /dev/pts/N

or against a real pump: ``.venv/bin/python tests/hal/measure_exchange.py /dev/ttyUSB0``
(it sets the diameter to 14.43 mm and changes the rate while stopped).
"""

from __future__ import annotations

import sys
import time

import hal


def main(url: str, count: int = 100) -> None:
    """Print the mean time per status query, per set_rate call and per Safe-mode heartbeat."""
    with hal.open_pump("ne1000", url) as pump:
        pump.configure(syringe_diameter_mm="14.43")
        start = time.perf_counter()
        for _ in range(count):
            pump.read_status()
        print(f"read_status: {(time.perf_counter() - start) / count * 1000:.2f} ms per exchange")
        start = time.perf_counter()
        for i in range(count // 2):
            pump.set_rate(1_000_000 + 1000 * i)
        print(f"set_rate (read, set, read back): {(time.perf_counter() - start) / (count // 2) * 1000:.2f} ms per call")
        pump.enter_safe_mode(10)
        start = time.perf_counter()
        for _ in range(count):
            pump.heartbeat()
        print(f"safe-mode heartbeat: {(time.perf_counter() - start) / count * 1000:.2f} ms per exchange")
        pump.exit_safe_mode()


if __name__ == "__main__":
    main(sys.argv[1])
