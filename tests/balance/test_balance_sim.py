"""The simulated pan and emulators: physics, determinism, settling, strict options, MT-SICS replies byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hal.balance import water_density_g_per_ml
from cython_ext.errors import ConfigError
from hal.mtsics import codec as sics
from sim.balance import create_balance
from sim.balance.pan import Pan, PanSettings
from sim.clock import VirtualClock


def test_water_density_matches_published_values() -> None:
    assert water_density_g_per_ml(20.0) == pytest.approx(0.998207, abs=2e-6)
    assert water_density_g_per_ml(4.0) == pytest.approx(0.999975, abs=2e-6)
    assert water_density_g_per_ml(25.0) == pytest.approx(0.997047, abs=2e-6)
    for bad in (-1.0, 41.0, float("nan"), "20"):
        with pytest.raises(ConfigError):
            water_density_g_per_ml(bad)  # type: ignore[arg-type]


def test_evaporation_and_drift_move_the_reading_linearly() -> None:
    clock = VirtualClock()
    pan = Pan(clock, lambda: 0, PanSettings(resolution_ug=1, evaporation_ug_per_h=120.0, drift_ug_per_h=20.0))
    clock.advance(3600)
    assert pan.read().net_ug == -100
    clock.advance(1800)
    assert pan.read().net_ug == -150


def test_noise_is_seeded_and_reproducible() -> None:
    def readings(seed: int) -> list[int]:
        clock = VirtualClock()
        pan = Pan(clock, lambda: 0, PanSettings(resolution_ug=1, noise_ug=50.0), seed=seed)
        out = []
        for _ in range(20):
            clock.advance(30)
            out.append(pan.read().net_ug)
        return out

    assert readings(7) == readings(7)
    assert readings(7) != readings(8)
    assert len(set(readings(7))) > 1


def test_scripted_disturbances_make_readings_unstable() -> None:
    clock = VirtualClock()
    pan = Pan(clock, lambda: 0, PanSettings(disturbances_s=((100.0, 20.0),)))
    clock.advance(99)
    assert pan.read().stable
    clock.advance(2)
    assert not pan.read().stable
    clock.advance(20)
    assert pan.read().stable


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("resolution_ug", 3),
        ("resolution_ug", 0),
        ("noise_ug", -1.0),
        ("temperature_c", 80.0),
        ("settling_s", float("inf")),
        ("initial_load_ug", -5),
        ("disturbances_s", [(1.0,)]),
        ("disturbances_s", [5]),
        ("disturbances_s", 5),
        ("no_such_option", 1),
    ],
)
def test_bad_options_are_rejected_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        create_balance("mtsics", VirtualClock(), lambda: 0, **{option: value})
    assert caught.value.field.startswith(option)


@pytest.mark.parametrize(
    ("kind", "option", "value"),
    [
        ("mtsics", "model", 'say "hi"'),
        ("mtsics", "field_width", 99),
        ("mtsics", "unit", "lb"),
        ("mtsics", "stream_interval_s", 0),
        ("sbi", "serial_number", ""),
        ("sbi", "id_codes", "N"),
        ("sbi", "autoprint_interval_s", -1.0),
    ],
)
def test_bad_device_options_are_rejected_when_built(kind: str, option: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        create_balance(kind, VirtualClock(), lambda: 0, **{option: value})
    assert caught.value.field == option


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ConfigError):
        create_balance("kern", VirtualClock(), lambda: 0)


def test_mtsics_emulator_answers_byte_for_byte() -> None:
    clock = VirtualClock()
    volume = [0]
    balance = create_balance("mtsics", clock, lambda: volume[0])
    assert balance.receive(b"SI\r\n") == b"S S    0.00000 g\r\n"
    assert balance.receive(b"I4\r\n") == b'I4 A "B123456789"\r\n'
    assert balance.receive(b"si\r\n") == b"ES\r\n"
    assert balance.receive(b"S 1\r\n") == b"ES\r\n"
    volume[0] = 100_000
    clock.advance(0.5)
    assert balance.receive(b"SI\r\n") == b"S D    0.09982 g\r\n"
    assert balance.receive(b"S\r\n") == b""  # moving: S waits for stability
    clock.advance(10)
    assert balance.poll() == b"S S    0.09982 g\r\n"
    assert balance.receive(b"Z\r\n") == b"Z A\r\n"
    clock.advance(10)
    assert balance.receive(b"S") == b""  # no line end yet
    assert balance.receive(b"I\r\n") == b"S S    0.00000 g\r\n"
    assert balance.receive(b"X" * 200 + b"\r\n") == b"ET\r\n"


def test_mtsics_stream_stops_on_reset_and_catches_up_boundedly() -> None:
    clock = VirtualClock()
    balance = create_balance("mtsics", clock, lambda: 0, stream_interval_s=0.1)
    assert balance.receive(b"SIR\r\n").startswith(b"S S")
    clock.advance(1.0)
    assert balance.poll().count(b"\r\n") == 10
    clock.advance(3600)
    lines = sics.LineDeframer().feed(balance.poll())
    assert len(lines) == 50
    assert balance.receive(b"@\r\n") == b'I4 A "B123456789"\r\n'
    clock.advance(1.0)
    assert balance.poll() == b""


def test_sbi_emulator_answers_byte_for_byte() -> None:
    clock = VirtualClock()
    balance = create_balance("sbi", clock, lambda: 0, resolution_ug=100)
    assert balance.receive(b"\x1bP\r\n") == b"+   0.0000 g  \r\n"
    assert balance.receive(b"\x1bx1_") == b"MSE225S       \r\n"
    assert balance.receive(b"\x1bQ") == b""  # unused command: ignored
    sbi_id = create_balance("sbi", clock, lambda: 0, resolution_ug=100, id_codes=True)
    assert sbi_id.receive(b"\x1bP") == b"N     +   0.0000 g  \r\n"


@settings(max_examples=25, stateful_step_count=30)
class PanMachine(RuleBasedStateMachine):
    """Zero, tare, steps and delivery in any order: the display always equals gross - zero - tare, rounded."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.volume = [0]
        self.pan = Pan(self.clock, lambda: self.volume[0], PanSettings(resolution_ug=10, temperature_c=20.0))
        self.load_ug = 0
        self.zero_ug = 0
        self.tare_ug = 0

    def gross(self) -> float:
        return self.load_ug + self.volume[0] * self.pan.density_g_per_ml

    @rule(volume_nl=st.integers(min_value=0, max_value=5_000_000))
    def deliver(self, volume_nl: int) -> None:
        self.volume[0] += volume_nl

    @rule(delta_ug=st.integers(min_value=-1_000_000, max_value=1_000_000))
    def step(self, delta_ug: int) -> None:
        self.pan.add_load(delta_ug)
        self.load_ug += delta_ug

    @rule()
    def zero(self) -> None:
        self.pan.zero()
        self.zero_ug = round(self.gross())
        self.tare_ug = 0

    @rule()
    def tare(self) -> None:
        stored = self.pan.tare()
        self.tare_ug = round((self.gross() - self.zero_ug) / 10) * 10
        assert stored == self.tare_ug

    @rule(seconds=st.integers(min_value=0, max_value=100))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def display_matches_model(self) -> None:
        expected = round((self.gross() - self.zero_ug - self.tare_ug) / 10) * 10
        assert self.pan.read().net_ug == expected


TestPanMachine = PanMachine.TestCase


@given(st.lists(st.binary(max_size=64), max_size=12))
def test_emulators_survive_any_bytes_and_answer_only_valid_lines(chunks: list[bytes]) -> None:
    from hal.sartorius import codec as sbi

    clock = VirtualClock()
    mtsics = create_balance("mtsics", clock, lambda: 0)
    sartorius = create_balance("sbi", clock, lambda: 0)
    sics_lines = sics.LineDeframer()
    for chunk in chunks:
        clock.advance(0.05)
        for line in sics_lines.feed(mtsics.receive(chunk) + mtsics.poll()):
            assert not isinstance(sics.decode_reply(line), sics.MalformedLine)
        out = sartorius.receive(chunk) + sartorius.poll()
        for line in out.split(b"\r\n")[:-1]:
            decoded = sbi.decode_weight_line(line)
            assert not isinstance(decoded, sbi.MalformedLine) or sbi.decode_text_line(line) in (
                sartorius.model,
                sartorius.serial_number,
                sartorius.firmware,
            )
