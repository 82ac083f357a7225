"""``itb sim serve --balance ...`` in a subprocess, as a bench user starts it, for the balance interop tests.

The simulator runs in real time (its own :class:`~sim.clock.ScaledClock`),
on a pty, in its own process: the clients under test open the device path
exactly as they would open ``/dev/ttyUSB0``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Longest wait for the simulator to stop after SIGTERM, s.
STOP_TIMEOUT_S = 30.0


@contextmanager
def served_balance(kind: str, *extra_args: str) -> Iterator[str]:
    """Serve a pump and a ``kind`` balance on ptys; yield the balance's device path.

    :param kind: ``"mtsics"`` or ``"sbi"``.
    :param extra_args: more ``itb sim serve`` options (``--sbi-id-codes``).
    """
    command = [sys.executable, "-m", "hil.cli", "sim", "serve", "--link", "pty", "--balance", kind, *extra_args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), True)
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[1].startswith(f"{kind} balance on "), (lines, process.poll())
        yield lines[1].split(" on ", 1)[1].strip()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    assert process.returncode == 0
