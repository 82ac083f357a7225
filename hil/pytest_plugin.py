"""pytest plugin: firmware-in-the-loop fixtures for your own tests (entry point ``pytest11``: ``itb``).

Installed with itb-fil, it is active in any pytest run; nothing to import. Every
fixture runs in virtual time on one :class:`~sim.clock.VirtualClock`, so a test
drives days of therapy in milliseconds and is deterministic::

    def test_my_prescription_runs_a_day(itb_controller, itb_clock):
        result = itb_controller.implant()
        assert result.allowed, result.reasons
        itb_controller.run_until(itb_controller.now_ms() + 86_400_000)
        assert itb_controller.loop.total_counted_nl > 0

Fixtures (function scope):

- ``itb_clock``: the virtual clock every fixture shares;
- ``itb_ne1000``: a simulated NE-1000 served on a real pseudo-terminal (``--itb-link tcp``:
  on a TCP port; ``inprocess``: no port at all); a :class:`sim.rig.SimulatedRig` with
  ``url`` (open it with any serial client, or ``hal.open_pump("ne1000", url)``) and
  ``device`` (fault hooks: ``inject_stall()``, ``set_occluded()``...);
- ``itb_balance``: a simulated balance (``--itb-balance mtsics`` or ``sbi``) weighing what
  the pump delivers, on its own port: ``(url, device)``; open it with
  ``hal.balance.open_balance(kind, url, clock=itb_clock)``;
- ``itb_pump``: the NE-1000 driver connected to ``itb_ne1000``, syringe configured;
- ``itb_prescription``: the prescription (``--itb-prescription FILE``, default the shipped
  ``spinal_simple_500.toml``); override the fixture to give your own;
- ``itb_patient``: the patient record (default: a pump replacement whose documented dose is
  the prescription's daily total, so ``implant()`` starts it); override the fixture to give a
  screened patient or another history;
- ``itb_controller``: the whole controller built through its front door,
  :func:`controller.assembly.build_controller`, on ``itb_pump`` and a durable store in
  ``tmp_path/journal.sqlite``.

Options: ``--itb-link pty|tcp|inprocess``, ``--itb-balance mtsics|sbi``,
``--itb-prescription FILE``, ``--itb-seed N``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Syringe of the simulated pump, mm: the default scenario's.
SYRINGE_DIAMETER_MM = "4.699"
#: The prescription the controller fixture uses unless told otherwise.
DEFAULT_PRESCRIPTION = Path(__file__).with_name("prescriptions") / "spinal_simple_500.toml"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's command-line options (group ``itb``)."""
    group = parser.getgroup("itb", "itb-fil firmware-in-the-loop fixtures")
    group.addoption("--itb-link", choices=("pty", "tcp", "inprocess"), default="pty",
                    help="how the simulated NE-1000 is served (default pty)")
    group.addoption("--itb-balance", choices=("mtsics", "sbi"), default="mtsics",
                    help="which simulated balance itb_balance is (default mtsics)")
    group.addoption("--itb-prescription", metavar="FILE", default=None,
                    help="the prescription itb_controller runs (default: the shipped spinal_simple_500.toml)")
    group.addoption("--itb-seed", type=int, default=0, help="seed of the simulated devices' noise (default 0)")


@pytest.fixture
def itb_clock() -> Any:
    """The virtual clock the simulated devices and the controller share."""
    from sim.clock import VirtualClock

    return VirtualClock()


@pytest.fixture
def itb_ne1000(request: pytest.FixtureRequest, itb_clock: Any) -> Iterator[Any]:
    """A simulated NE-1000 on a pty (or ``--itb-link``), closed after the test."""
    from sim.rig import simulated_pump

    with simulated_pump(request.config.getoption("--itb-link"), clock=itb_clock,
                        seed=request.config.getoption("--itb-seed"), syringe_diameter_mm=SYRINGE_DIAMETER_MM,
                        syringe_volume_ml="1000") as rig:
        yield rig


@pytest.fixture
def itb_balance(request: pytest.FixtureRequest, itb_clock: Any, itb_ne1000: Any) -> Iterator[tuple[str, Any]]:
    """A simulated balance weighing ``itb_ne1000``'s output, on its own port: ``(url, device)``."""
    from sim.balance import create_balance
    from sim.endpoints import InProcessEndpoint, PtyEndpoint, TcpEndpoint

    kind = request.config.getoption("--itb-balance")
    device = create_balance(kind, itb_clock, itb_ne1000.device.mechanics.actual_delivered_nl,
                            seed=request.config.getoption("--itb-seed"))
    link = request.config.getoption("--itb-link")
    endpoint = {"pty": PtyEndpoint, "tcp": TcpEndpoint, "inprocess": InProcessEndpoint}[link](device)
    try:
        yield endpoint.url, device
    finally:
        endpoint.close()


@pytest.fixture
def itb_pump(itb_ne1000: Any, itb_clock: Any) -> Iterator[Any]:
    """The NE-1000 driver on ``itb_ne1000``, its syringe configured; closed after the test."""
    import hal

    with hal.open_pump("ne1000", itb_ne1000.url, clock=itb_clock) as pump:
        pump.configure(syringe_diameter_mm=SYRINGE_DIAMETER_MM)
        yield pump


@pytest.fixture
def itb_prescription(request: pytest.FixtureRequest) -> Any:
    """The validated prescription ``itb_controller`` runs (``--itb-prescription``)."""
    from controller.prescription import load_prescription

    return load_prescription(request.config.getoption("--itb-prescription") or DEFAULT_PRESCRIPTION)


@pytest.fixture
def itb_patient(itb_prescription: Any) -> Any:
    """The :class:`controller.patient.PatientRecord` ``itb_controller`` treats.

    A pump replacement documented at the prescription's daily total: without a screening or a
    transfer record the controller refuses to implant (issue #9), and a bench test of a
    prescription usually wants it running. Override it for screening or restart tests.
    """
    from controller.patient import History, PatientRecord

    rx = itb_prescription
    return PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                         prior_dose_ng_per_day=rx.programme.daily_total_ng())


@pytest.fixture
def itb_controller(itb_prescription: Any, itb_patient: Any, itb_pump: Any, itb_clock: Any, tmp_path: Path,
                   request: pytest.FixtureRequest) -> Iterator[Any]:
    """The controller from :func:`controller.assembly.build_controller`, on a store in ``tmp_path``
    (the prescription file's signature must verify against the rig's trust store)."""
    from controller.assembly import build_controller
    from controller.signing import SignedFile
    from controller.store import Store

    rx = itb_prescription
    signed = SignedFile.read(request.config.getoption("--itb-prescription") or DEFAULT_PRESCRIPTION)
    store = Store(tmp_path / "journal.sqlite", itb_clock)
    try:
        yield build_controller(rx, itb_patient, itb_pump, itb_clock,
                               store, prescription_file=signed, reason="pytest itb_controller fixture")
    finally:
        store.close()
