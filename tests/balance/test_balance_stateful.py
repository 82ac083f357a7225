"""Stateful: any sequence of driver calls over the wire agrees with a model of the pan.

The machine drives a real driver against an emulator on an in-process link:
delivery, waiting, tare, zero, stable and immediate reads, short streams and
load steps in any order. The model tracks gross mass, zero and tare; every
reading the driver returns must equal the model's display value, and a
stable-weight request must succeed once the pan has had time to settle.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hal.balance import open_balance
from sim.balance import create_balance
from sim.clock import VirtualClock
from sim.endpoints import InProcessEndpoint

RESOLUTION_UG = 10


class _BalanceMachine(RuleBasedStateMachine):
    kind = ""

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.volume = [0]
        self.device = create_balance(self.kind, self.clock, lambda: self.volume[0], resolution_ug=RESOLUTION_UG)
        self.endpoint = InProcessEndpoint(self.device)
        self.driver = open_balance(self.kind, self.endpoint.url, clock=self.clock)
        self.load_ug = 0
        self.zero_ug = 0
        self.tare_ug = 0

    def teardown(self) -> None:
        self.driver.close()
        self.endpoint.close()

    def display_ug(self) -> int:
        gross = self.load_ug + self.volume[0] * self.device.pan.density_g_per_ml
        return round((gross - self.zero_ug - self.tare_ug) / RESOLUTION_UG) * RESOLUTION_UG

    def settle(self) -> None:
        self.clock.advance(10)
        self.driver.read_immediate()  # a second observation with no movement since
        self.clock.advance(1)

    @rule(volume_nl=st.integers(min_value=0, max_value=2_000_000))
    def deliver(self, volume_nl: int) -> None:
        self.volume[0] += volume_nl

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        # Take off at most what is on the pan: the machine stays inside the weighing range.
        delta_ug = data.draw(st.integers(min_value=-self.load_ug, max_value=5_000_000))
        self.device.pan.add_load(delta_ug)
        self.load_ug += delta_ug

    @rule(seconds=st.integers(min_value=0, max_value=120))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def tare(self) -> None:
        self.settle()
        self.driver.tare()
        gross = self.load_ug + self.volume[0] * self.device.pan.density_g_per_ml
        self.tare_ug = round((gross - self.zero_ug) / RESOLUTION_UG) * RESOLUTION_UG

    @rule()
    def zero(self) -> None:
        self.settle()
        self.driver.zero()
        self.zero_ug = round(self.load_ug + self.volume[0] * self.device.pan.density_g_per_ml)
        self.tare_ug = 0

    @rule()
    def read_stable(self) -> None:
        self.settle()
        reading = self.driver.read_stable(timeout_s=5)
        assert reading.stable
        assert reading.mass_ug == self.display_ug()

    @rule(count=st.integers(min_value=1, max_value=3))
    def stream(self, count: int) -> None:
        # Streamed readings fall due in virtual time, so the test moves the clock between them.
        stream = self.driver.stream(max_readings=count)
        readings = [next(stream)]
        for _ in range(count - 1):
            self.clock.advance(0.1)
            readings.append(next(stream))
        stream.close()
        assert all(r.mass_ug == self.display_ug() for r in readings)

    @invariant()
    def immediate_reading_matches_the_model(self) -> None:
        assert self.driver.read_immediate().mass_ug == self.display_ug()


class MtSicsMachine(_BalanceMachine):
    kind = "mtsics"


class SbiMachine(_BalanceMachine):
    kind = "sbi"


TestMtSicsOverTheWire = MtSicsMachine.TestCase
TestMtSicsOverTheWire.settings = settings(max_examples=20, stateful_step_count=20)
TestSbiOverTheWire = SbiMachine.TestCase
TestSbiOverTheWire.settings = settings(max_examples=20, stateful_step_count=20)
