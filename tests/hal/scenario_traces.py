"""Write the serial traces of the shipped scenarios in a comparable form (a tool, not a test).

Run it before and after a HAL change and compare the two directories; identical
files mean the driver put exactly the same bytes on the wire and read exactly
the same bytes back::

    .venv/bin/python tests/hal/scenario_traces.py /tmp/traces-before    # on the old code
    .venv/bin/python tests/hal/scenario_traces.py /tmp/traces-after     # on the new code
    diff -r /tmp/traces-before /tmp/traces-after && echo identical

Each scenario runs over the in-process link (``itbsim://``), whose trace is
exactly reproducible, and over a pty, where the operating system may split a
reply into several reads. So the header line (URL, start time) is dropped, and
for the pty the consecutive ``RX`` chunks are joined into one line per burst:
what remains is the byte stream in each direction and the driver's notes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hil.scenario import RunOptions, ScenarioRunner, load_scenario

SCENARIOS = ("default", "faults")
LINKS = ("inprocess", "pty")


def normalised_trace(text: str) -> str:
    """The trace without its header, with consecutive RX chunks joined (timestamps of the first kept)."""
    out: list[str] = []
    pending: tuple[str, list[str]] | None = None
    for line in text.splitlines()[1:]:
        stamp, tag, *rest = line.split(maxsplit=2)
        if tag == "RX":
            hex_part = rest[0].rsplit("|", 2)[0].strip() if rest else ""
            if pending is None:
                pending = (stamp, [])
            pending[1].append(hex_part)
            continue
        if pending is not None:
            out.append(f"{pending[0]} RX {' '.join(pending[1])}")
            pending = None
        if tag == "--" and rest and rest[0].startswith("timeout reading"):
            continue  # how many bytes a read asked for depends on how the OS split the reply
        out.append(line)
    if pending is not None:
        out.append(f"{pending[0]} RX {' '.join(pending[1])}")
    return "\n".join(out) + "\n"


def write_traces(target: Path) -> list[Path]:
    """Run every scenario on every link and write ``<scenario>.<link>.trace`` into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCENARIOS:
        for link in LINKS:
            with tempfile.TemporaryDirectory(prefix="itb-trace-") as work:
                ScenarioRunner(load_scenario(name), RunOptions(link=link, report_dir=Path(work))).run()
                text = (Path(work) / "serial-trace.txt").read_text(encoding="utf-8")
            path = target / f"{name}.{link}.trace"
            path.write_text(normalised_trace(text), encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_traces(Path(sys.argv[1])):
        print(written_path)
