"""Published Sartorius SBI clients from PyPI, unchanged, against ``itb sim serve --balance sbi`` over a pty.

- ``SartoriUSB`` 0.2.5 (``SartoriusUsb``) at 9600 7O1: print (16- and 22-character lines),
  the identification commands ``x1_``..``x3_``, tare, zero, filter, key lock, restart.
- ``sartorius`` 0.7.1 (``Scale``, asyncio) at its default 9600 8O1: it reads only the
  22-character format with an ``N`` or ``G`` ID code, so it runs against
  ``--sbi-id-codes``; weight, identification, zero (``ESC T``).
- ``labmcp-sartorius`` 0.1.2 (``SBIBalance``) with its "no parity" address option (see the
  test for why not 8O1 on a pty): identify, print, stable weight, tare, zero, filter, key lock.

Every client's results are asserted against what the simulated MSE225S holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import labmcp.transports as labmcp_transports
import labmcp_sartorius.driver as labmcp_driver
import sartorius
import sartoriusb

from tests.interop.serve_mtsics_sbi import served_balance


@pytest.fixture(scope="module")
def plain_path() -> Iterator[str]:
    with served_balance("sbi") as path:
        yield path


@pytest.fixture(scope="module")
def id_code_path() -> Iterator[str]:
    with served_balance("sbi", "--sbi-id-codes") as path:
        yield path


@pytest.mark.parametrize("id_codes", [False, True], ids=["16-characters", "22-characters"])
def test_sartoriusb(request: pytest.FixtureRequest, id_codes: bool) -> None:
    path = request.getfixturevalue("id_code_path" if id_codes else "plain_path")
    with sartoriusb.SartoriusUsb(path, baudrate=9600, bytesize=7, parity="O", timeout=0.3) as scale:
        measurement = scale.measure()
        assert measurement.message is None
        assert (measurement.value, measurement.unit, measurement.stable) == ("+0.00000", "g", True)
        assert measurement.mode == ("N" if id_codes else "unknown")
        assert scale.get(sartoriusb.CMD_INFO_TYPE) == ["MSE225S       \r\n"]
        assert scale.get(sartoriusb.CMD_INFO_SNR) == ["Ser.no    0031204567\r\n"]
        assert scale.get(sartoriusb.CMD_INFO_VERSION_SCALE) == ["00-51-03      \r\n"]
        for command in (
            sartoriusb.CMD_FILTER_ENVIRONMENT_STABLE, sartoriusb.CMD_KEYBOARD_LOCK, sartoriusb.CMD_KEYBOARD_UNKLOCK,
            sartoriusb.CMD_EXPCLICIT_TARA, sartoriusb.CMD_EXPCLICIT_NULL, sartoriusb.CMD_TARA, sartoriusb.CMD_RESTART,
        ):  # fmt: skip
            assert scale.get(command) == [], command  # control commands are silent
        assert scale.measure().value == "+0.00000"


def test_sartorius_asyncio_driver(id_code_path: str) -> None:
    async def stable(scale: object) -> dict[str, object]:
        # The client reads once; a user repeats until the balance shows its unit (stable).
        for _ in range(50):
            reading = await scale.get()  # type: ignore[attr-defined]
            if reading.get("stable"):
                return reading
            await asyncio.sleep(0.2)
        raise AssertionError(f"never stable: {reading}")

    async def session() -> tuple[object, object, object]:
        scale = sartorius.Scale(address=id_code_path, timeout=1.0)
        try:
            reading = await stable(scale)
            info = await scale.get_info()
            await scale.zero()
            return reading, info, await stable(scale)
        finally:
            scale.hw.close()

    reading, info, after_zero = asyncio.run(session())
    assert reading == {"mass": 0.0, "units": "g", "stable": True, "measurement": "net"}
    # The client keeps the line as sent: the serial number comes with its "Ser.no" label.
    assert info == {"model": "MSE225S", "serial": "Ser.no    0031204567", "software": "00-51-03"}
    assert after_zero["mass"] == 0.0 and after_zero["measurement"] == "net"  # type: ignore[index]


def test_labmcp_sartorius(plain_path: str) -> None:
    # The client's documented "balance set to no parity" option: it sets its port's timeout on
    # the first read, within a millisecond of opening, and a Linux pty refuses (EINVAL) an odd
    # parity set again before the simulator has cleared the PARODD bit the pty leaves behind.
    transport = labmcp_transports.open_transport(
        f"serial://{plain_path}?parity=N", baudrate=9600, bytesize=8, parity="O",
        read_termination="\r\n", write_termination="\r\n", timeout=2.0,
    )  # fmt: skip
    balance = labmcp_driver.SBIBalance(transport)
    try:
        assert balance.identify() == {
            "manufacturer": "Sartorius", "protocol": "SBI", "model": "MSE225S",
            "serial": "Ser.no    0031204567", "software": "00-51-03",
        }  # fmt: skip
        reading = balance.print_reading()
        assert (reading.value, reading.unit, reading.stable, reading.decimals) == (0.0, "g", True, 5)
        balance.tare()
        balance.zero()
        assert balance.weight(stable=True, timeout=10.0).value == 0.0
        balance.set_ambient_filter("unstable")
        balance.lock_keys(True)
        balance.lock_keys(False)
    finally:
        balance.close()
