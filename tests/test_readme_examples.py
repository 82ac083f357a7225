"""The README's shell examples run as written, against the simulator.

Every line of a ``sh`` block that calls ``.venv/bin/itb`` is run in README order,
in one scratch directory (so ``itb-report/`` written by one example serves the
next), through this interpreter's ``itb``. Examples that need real hardware or
only measure timing are listed, with the reason, and skipped; ``itb sim serve``
examples run until they print their endpoint and then get SIGINT, as a user stops them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ITB = ".venv/bin/itb"
#: Why an example is not run here, by a word in its command line.
NOT_HERE = {
    "/dev/ttyUSB": "needs a real pump or balance",
    "itb bench": "measures timing (itb bench is the place for it, not the test suite)",
}


def readme_examples() -> list[str]:
    """Every ``.venv/bin/itb`` command line of the README's ``sh`` blocks, comments removed, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command.startswith(ITB):
                lines.append(command)
    return lines


EXAMPLES = readme_examples()


def test_the_readme_has_examples_to_run() -> None:
    assert len([c for c in EXAMPLES if not any(word in c for word in NOT_HERE)]) >= 10


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    (work / "hil").symlink_to(ROOT / "hil")
    shutil.copy(ROOT / "hil" / "scenarios" / "periodic.toml", work / "my-scenario.toml")  # a short one
    return work


def _shell(command: str) -> str:
    itb = f"{shlex.quote(sys.executable)} -m hil.cli"
    return "exec " + command.replace(ITB, itb)


@pytest.mark.parametrize("command", EXAMPLES)
def test_readme_example_runs(command: str, scratch: Path) -> None:
    for word, why in NOT_HERE.items():
        if word in command:
            pytest.skip(why)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    if "sim serve" in command:
        server = subprocess.Popen(["bash", "-c", _shell(command)], cwd=scratch, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert server.stdout is not None
        first = server.stdout.readline()
        if not first:
            err = server.communicate(timeout=30)[1]
            if "Address already in use" in err:
                pytest.skip(f"the example's port is taken on this machine: {err.strip()}")
            pytest.fail(f"{command}: no endpoint printed: {err}")
        assert first.startswith(("/dev/", "ne1000", "socket://")), first
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        return
    done = subprocess.run(["bash", "-c", _shell(command)], cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
