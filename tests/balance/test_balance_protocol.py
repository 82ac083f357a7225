"""Both drivers against scripted links: exact bytes out, exact bytes back, nothing left over.

A :class:`ScriptedLink` holds ``(sent, reply)`` pairs. Every ``write`` must be
the next expected ``sent`` bytes; its ``reply`` then becomes readable. A test
fails on an unexpected write and on any unused pair, so rejected calls are
proven to put nothing on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hal.balance import BalanceFault
from cython_ext.errors import CommunicationError, ConfigError, DeviceError, LinkTimeoutError, StateError
from hal.mtsics.driver import MtSicsDriver
from hal.sartorius.driver import SbiDriver
from sim.clock import VirtualClock


class ScriptedLink:
    """A fake serial link that plays a script of exchanges."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.pending = bytearray()
        self.closed = False
        self.timeout_s = 1.0

    def write(self, data: bytes) -> None:
        assert self.script, f"unexpected write {data!r}: script finished"
        sent, reply = self.script.pop(0)
        assert data == sent, f"wrote {data!r}, script expected {sent!r}"
        self.pending += reply

    def read_until(self, terminator: bytes, size: int | None = None) -> bytes:
        index = self.pending.find(terminator)
        if index < 0:
            data, self.pending = bytes(self.pending), bytearray()
            return data  # a timeout: whatever arrived, without the terminator
        data = bytes(self.pending[: index + len(terminator)])
        del self.pending[: index + len(terminator)]
        return data

    def reset_input(self) -> None:
        """Nothing is in flight between scripted exchanges."""

    def close(self) -> None:
        self.closed = True


#: The exchanges the tests script, from the manuals' command and reply formats (never from our codecs), as one
#: flat table of ``(script, sent, reply)`` rows; :func:`script` picks one script's pairs, in order.
EXCHANGES: tuple[tuple[str, bytes, bytes], ...] = (
    ("mtsics identify", b"I2\r\n", b'I2 A "XS205DU 220.00000 g"\r\n'),
    ("mtsics identify", b"I4\r\n", b'I4 A "1128454321"\r\n'),
    ("mtsics identify", b"I3\r\n", b'I3 A "3.10.2"\r\n'),
    ("mtsics settling", b"SI\r\n", b"S D      12.34000 g\r\n"),
    ("mtsics settling", b"SI\r\n", b"S I\r\n"),
    ("mtsics settling", b"SI\r\n", b"S S      12.34567 g\r\n"),
    ("mtsics stale line", b"SI\r\n", b'I4 A "late"\r\nS D       0.00100 g\r\n'),
    ("mtsics zero refused, tare", b"SI\r\n", b"S S      20.00000 g\r\n"),
    ("mtsics zero refused, tare", b"Z\r\n", b"Z I\r\n"),
    ("mtsics zero refused, tare", b"SI\r\n", b"S S      20.00000 g\r\n"),
    ("mtsics zero refused, tare", b"T\r\n", b"T S     20.00000 g\r\n"),
    ("mtsics cut, then garbled", b"SI\r\n", b"S S 1.0"),
    ("mtsics cut, then garbled", b"SI\r\n", b"S Q 1.0 g\r\n"),
    ("mtsics stream", b"TA\r\n", b"TA A    0.00000 g\r\n"),
    ("mtsics stream", b"SIR\r\n", b"S D 1.00000 g\r\nS S 1.00001 g\r\n"),
    ("mtsics stream", b"@\r\n", b'S S 1.00002 g\r\nI4 A "1128454321"\r\n'),
    # MT-SICS "@" resets the tare memory to zero; the driver presets the tare it read before SIR.
    ("mtsics stream with a tare", b"TA\r\n", b"TA A   25.00010 g\r\n"),
    ("mtsics stream with a tare", b"SIR\r\n", b"S S 1.00000 g\r\n"),
    ("mtsics stream with a tare", b"@\r\n", b'I4 A "1128454321"\r\n'),
    ("mtsics stream with a tare", b"TA 25.00010 g\r\n", b"TA A   25.00010 g\r\n"),
    ("sbi print, identify", b"\x1bP\r\n", b"+   1255.7 g  \r\n"),
    ("sbi print, identify", b"\x1bx1_\r\n", b"LA230S        \r\n"),
    ("sbi print, identify", b"\x1bx2_\r\n", b"Ser.no      12345678\r\n"),
    ("sbi print, identify", b"\x1bx3_\r\n", b"00-38-09      \r\n"),
    ("sbi settling", b"\x1bP\r\n", b"+     12.3    \r\n"),
    ("sbi settling", b"\x1bP\r\n", b"+     12.4 g  \r\n"),
    ("sbi tare, zero", b"\x1bU\r\n", b""),
    ("sbi tare, zero", b"\x1bV\r\n", b""),
)


def script(name: str) -> list[tuple[bytes, bytes]]:
    """The ``(sent, reply)`` pairs of the script ``name`` in :data:`EXCHANGES`, in order."""
    pairs = [(sent, reply) for script_name, sent, reply in EXCHANGES if script_name == name]
    assert pairs, f"no script {name!r}"
    return pairs


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def scripts() -> Iterator[list[ScriptedLink]]:
    links: list[ScriptedLink] = []
    yield links
    for link in links:
        assert not link.script, f"script not used up: {link.script!r}"


def scripted(
    driver_class: type[MtSicsDriver] | type[SbiDriver],
    scripts: list[ScriptedLink],
    clock: VirtualClock,
    *pairs: tuple[bytes, bytes],
) -> MtSicsDriver | SbiDriver:
    """A driver of *driver_class* on a fresh scripted link that the ``scripts`` fixture checks at teardown."""
    link = ScriptedLink(list(pairs))
    scripts.append(link)
    return driver_class(link, clock=clock)


def mtsics(scripts: list[ScriptedLink], clock: VirtualClock, *pairs: tuple[bytes, bytes]) -> MtSicsDriver:
    return scripted(MtSicsDriver, scripts, clock, *pairs)


def sbi(scripts: list[ScriptedLink], clock: VirtualClock, *pairs: tuple[bytes, bytes]) -> SbiDriver:
    return scripted(SbiDriver, scripts, clock, *pairs)


def test_mtsics_identify(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = mtsics(scripts, clock, *script("mtsics identify"))
    identity = driver.identify()
    assert (identity.model, identity.capacity, identity.serial_number, identity.firmware) == (
        "XS205DU",
        "220.00000 g",
        "1128454321",
        "3.10.2",
    )


def test_mtsics_read_stable_repeats_si_until_the_balance_flags_it_stable(
    scripts: list[ScriptedLink], clock: VirtualClock
) -> None:
    # The wait runs on the host's clock (virtual here), not inside the balance's S.
    driver = mtsics(scripts, clock, *script("mtsics settling"))
    reading = driver.read_stable(timeout_s=5)
    assert (reading.mass_ug, reading.stable, reading.resolution_ug) == (12_345_670, True, 10)
    assert clock.monotonic_ns() == 2 * round(driver.STABLE_RETRY_INTERVAL_S * 1e9)


def test_mtsics_skips_a_stale_line_from_another_command(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = mtsics(scripts, clock, *script("mtsics stale line"))
    reading = driver.read_immediate()
    assert (reading.mass_ug, reading.stable) == (1_000, False)


@pytest.mark.parametrize(
    ("driver_class", "sent", "reply", "fault"),
    [
        (MtSicsDriver, b"SI\r\n", b"S +\r\n", BalanceFault.OVERLOAD),
        (MtSicsDriver, b"SI\r\n", b"S -\r\n", BalanceFault.UNDERLOAD),
        (MtSicsDriver, b"SI\r\n", b"ES\r\n", BalanceFault.SYNTAX),
        (MtSicsDriver, b"SI\r\n", b"ET\r\n", BalanceFault.TRANSMISSION),
        (MtSicsDriver, b"SI\r\n", b"EL\r\n", BalanceFault.LOGIC),
        (SbiDriver, b"\x1bP\r\n", b"      High    \r\n", BalanceFault.OVERLOAD),
        (SbiDriver, b"\x1bP\r\n", b"Stat        Low     \r\n", BalanceFault.UNDERLOAD),
        (SbiDriver, b"\x1bP\r\n", b"   ERR 054    \r\n", BalanceFault.DEVICE),
        (SbiDriver, b"\x1bP\r\n", b"Stat     APP.ERR    \r\n", BalanceFault.DEVICE),
        (SbiDriver, b"\x1bP\r\n", b"Stat        Cal.Ext.\r\n", BalanceFault.NOT_EXECUTABLE),
    ],
)
def test_device_faults_and_range_lines_raise_device_error_with_code(
    scripts: list[ScriptedLink],
    clock: VirtualClock,
    driver_class: type[MtSicsDriver] | type[SbiDriver],
    sent: bytes,
    reply: bytes,
    fault: BalanceFault,
) -> None:
    driver = scripted(driver_class, scripts, clock, (sent, reply))
    with pytest.raises(DeviceError) as caught:
        driver.read_immediate()
    assert caught.value.error_code == fault.value


def test_mtsics_zero_not_executable_and_tare(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = mtsics(scripts, clock, *script("mtsics zero refused, tare"))
    with pytest.raises(DeviceError) as caught:
        driver.zero()
    assert caught.value.error_code == BalanceFault.NOT_EXECUTABLE.value
    assert driver.tare() == 20_000_000


def test_mtsics_zero_is_not_sent_while_the_pan_never_settles(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    polls = round(MtSicsDriver.STABLE_REPLY_TIMEOUT_S / MtSicsDriver.STABLE_RETRY_INTERVAL_S) + 1
    driver = mtsics(scripts, clock, *[(b"SI\r\n", b"S D       1.00000 g\r\n")] * polls)
    with pytest.raises(DeviceError) as caught:
        driver.zero()
    assert caught.value.error_code == BalanceFault.NOT_EXECUTABLE.value
    assert clock.monotonic_ns() >= MtSicsDriver.STABLE_REPLY_TIMEOUT_S * 1e9


def test_mtsics_silence_is_a_timeout_and_garbage_a_communication_error(
    scripts: list[ScriptedLink], clock: VirtualClock
) -> None:
    driver = mtsics(scripts, clock, *script("mtsics cut, then garbled"))
    with pytest.raises(LinkTimeoutError):
        driver.read_immediate()
    with pytest.raises(CommunicationError):
        driver.read_immediate()


def test_mtsics_stream_starts_with_sir_and_stops_with_reset(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = mtsics(scripts, clock, *script("mtsics stream"))
    assert [r.mass_ug for r in driver.stream(max_readings=2)] == [1_000_000, 1_000_010]


def test_mtsics_stream_puts_back_the_tare_that_reset_clears(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = mtsics(scripts, clock, *script("mtsics stream with a tare"))
    assert [r.mass_ug for r in driver.stream(max_readings=1)] == [1_000_000]


def test_rejected_calls_never_reach_the_wire(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    for driver in (mtsics(scripts, clock), sbi(scripts, clock)):
        with pytest.raises(ConfigError):
            driver.read_stable(timeout_s=-1)
        with pytest.raises(ConfigError):
            driver.stream(max_readings=0)
        driver.close()
        with pytest.raises(StateError):
            driver.read_immediate()
        with pytest.raises(StateError):
            driver.tare()
        assert driver.link.closed


def test_sbi_print_and_identify(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = sbi(scripts, clock, *script("sbi print, identify"))
    reading = driver.read_immediate()
    assert (reading.mass_ug, reading.stable, reading.unit) == (1_255_700_000, True, "g")
    identity = driver.identify()
    assert (identity.model, identity.serial_number, identity.firmware) == ("LA230S", "12345678", "00-38-09")


def test_sbi_read_stable_polls_until_the_unit_appears(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = sbi(scripts, clock, *script("sbi settling"))
    assert driver.read_stable(timeout_s=5).mass_ug == 12_400_000


def test_sbi_tare_and_zero_send_their_escape_codes(scripts: list[ScriptedLink], clock: VirtualClock) -> None:
    driver = sbi(scripts, clock, *script("sbi tare, zero"))
    assert driver.tare() == 0
    driver.zero()


def test_sbi_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigError):
        SbiDriver(ScriptedLink([]), unit="lb")
    with pytest.raises(ConfigError):
        SbiDriver(ScriptedLink([]), poll_interval_s=-1.0)
