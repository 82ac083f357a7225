"""A simulated accuracy rig: a simulated NE-1000 and a simulated balance weighing what it delivers.

Both devices run on one :class:`~sim.clock.VirtualClock`, which the accuracy
sampler advances, so a 2 h test takes well under a second. The balance is fed
by the pump mechanics' *actual* delivered volume (with the injected bias and
noise), exactly what a real balance would weigh.

:func:`run_simulated_accuracy` is the entry point: it builds the run's
:class:`~hil.gravimetric.procedure.AccuracyConfig` first and gives the
simulated beaker the water that configuration describes (:func:`water_options`:
its temperature, hence density; its evaporation; air around the pan exactly
when the analysis corrects for air buoyancy), so the analysis recovers the
injected bias whatever the profile::

    result = run_simulated_accuracy(RigSettings("mtsics", bias_pct=3.0), 1_200_000,
                                    syringe_diameter_mm=14.5, water_temperature_c=30.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cython_ext.errors import ConfigError
from hil.gravimetric.analysis import AIR_DENSITY_G_PER_ML, WEIGHTS_DENSITY_G_PER_ML
from hil.gravimetric import procedure
from hil.gravimetric.procedure import AccuracyConfig, AccuracyResult, SampleCallback
from sim.balance import BALANCE_KINDS, MtSicsBalance, SbiBalance, create_balance
from sim.clock import VirtualClock
from sim.endpoints import InProcessEndpoint, PtyEndpoint
from sim.rig import simulated_pump

#: Links a simulated accuracy rig can use.
RIG_LINKS = ("inprocess", "pty")


@dataclass(frozen=True)
class RigSettings:
    """How a simulated accuracy rig is stood up: checked once, described once for the report.

    :ivar balance_kind: ``"mtsics"`` or ``"sbi"``.
    :ivar link: ``"inprocess"`` (fastest) or ``"pty"`` (a real pseudo-terminal per device).
    :ivar seed: seed of pump and balance noise.
    :ivar bias_pct: systematic delivery error injected into the pump mechanics, %.
    :ivar noise_pct: random delivery noise of the pump mechanics, %.
    :ivar faults: pump fault specs (:mod:`sim.faults`), e.g. ``("stall:at=3000",)``.
    :ivar pump_options: other :class:`~sim.newera.Ne1000` keywords.
    :ivar balance_options: :func:`sim.balance.create_balance` options (``noise_ug``, ``resolution_ug``...).
    :raises ConfigError: unknown kind or link.
    """

    balance_kind: str = "mtsics"
    link: str = "inprocess"
    seed: int = 0
    bias_pct: float = 0.0
    noise_pct: float = 0.0
    faults: tuple[str, ...] = ()
    pump_options: dict[str, Any] | None = None
    balance_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.balance_kind not in BALANCE_KINDS:
            raise ConfigError("balance_kind", self.balance_kind, f"one of {sorted(BALANCE_KINDS)}")
        if self.link not in RIG_LINKS:
            raise ConfigError("link", self.link, f"one of {RIG_LINKS}")

    def description(self, version: str) -> dict[str, Any]:
        """What the rig simulates, with its settings: the report's ``simulation`` block.

        :param version: the software version that simulates it.
        """
        return {
            "pump": {"simulator": "sim.newera.Ne1000", "version": version,
                     "settings": {"time": "virtual", "link": self.link, "seed": self.seed, "bias_pct": self.bias_pct,
                                  "noise_pct": self.noise_pct, "faults": list(self.faults) or "none"}},
            "balance": {"simulator": f"sim.balance ({self.balance_kind})", "version": version,
                        "settings": dict(self.balance_options or {})},
        }


@dataclass(frozen=True)
class SimulatedAccuracyRig:
    """A running simulated rig.

    :ivar pump_url: serial URL of the simulated pump.
    :ivar balance_url: serial URL of the simulated balance.
    :ivar balance_kind: the balance driver name to use (``"mtsics"`` or ``"sbi"``).
    :ivar clock: the virtual clock both devices run on.
    :ivar pump: the simulated pump (mechanics, fault hooks).
    :ivar balance: the simulated balance (its pan at ``.pan``).
    """

    pump_url: str
    balance_url: str
    balance_kind: str
    clock: VirtualClock
    pump: Any
    balance: MtSicsBalance | SbiBalance


@contextmanager
def simulated_accuracy_rig(
    settings: RigSettings = RigSettings(), *, clock: VirtualClock | None = None
) -> Iterator[SimulatedAccuracyRig]:
    """Stand up a simulated pump and balance for the duration of the ``with`` block.

    :param settings: the rig's devices, link, seed, injected errors and options.
    :param clock: the virtual clock (a new one by default).
    :raises ConfigError: a bad option; nothing is left running.
    """
    clock = clock or VirtualClock()
    with ExitStack() as stack:
        rig = stack.enter_context(
            simulated_pump(
                settings.link,
                clock=clock,
                seed=settings.seed,
                faults=settings.faults,
                bias_pct=settings.bias_pct,
                noise_pct=settings.noise_pct,
                **(settings.pump_options or {}),
            )
        )
        balance_url, balance, _ = stack.enter_context(
            simulated_balance(
                settings.balance_kind,
                clock=clock,
                link=settings.link,
                seed=settings.seed,
                delivered_nl=rig.device.mechanics.actual_delivered_nl,
                balance_options=settings.balance_options,
            )
        )
        yield SimulatedAccuracyRig(rig.url, balance_url, settings.balance_kind, clock, rig.device, balance)


@contextmanager
def simulated_balance(
    balance_kind: str = "mtsics",
    *,
    clock: VirtualClock | None = None,
    link: str = "inprocess",
    seed: int = 0,
    delivered_nl: Any = None,
    balance_options: dict[str, Any] | None = None,
) -> Iterator[tuple[str, MtSicsBalance | SbiBalance, VirtualClock]]:
    """Serve a simulated balance: alone (blank runs, wiring checks), or the accuracy rig's, weighing its pump.

    :param balance_kind: ``"mtsics"`` or ``"sbi"``.
    :param clock: the virtual clock (a new one by default).
    :param link: ``"inprocess"`` or ``"pty"``.
    :param seed: seed of the reading noise.
    :param delivered_nl: callable returning the volume in the beaker, nL (nothing by default).
    :param balance_options: :func:`sim.balance.create_balance` options.
    :return: (URL, device, clock) for the duration of the ``with`` block.
    :raises ConfigError: unknown kind or link, or a bad option.
    """
    if link not in RIG_LINKS:
        raise ConfigError("link", link, f"one of {RIG_LINKS}")
    clock = clock or VirtualClock()
    device = create_balance(balance_kind, clock, delivered_nl or (lambda: 0), seed=seed, **(balance_options or {}))
    endpoint = InProcessEndpoint(device) if link == "inprocess" else PtyEndpoint(device)
    with endpoint:
        yield endpoint.url, device, clock


def water_options(config: AccuracyConfig) -> dict[str, float]:
    """Simulated-balance options that make the beaker's water the water ``config`` describes.

    :param config: the run's configuration.
    :return: ``temperature_c`` (the density), ``evaporation_ug_per_h`` (what the analysis
        adds back), and the air and weights densities: air only when the analysis corrects for
        its buoyancy, with the densities that correction assumes.
    """
    return {
        "temperature_c": config.water_temperature_c,
        "evaporation_ug_per_h": config.evaporation_ug_per_h,
        "air_density_g_per_ml": AIR_DENSITY_G_PER_ML if config.air_buoyancy_correction else 0.0,
        "weights_density_g_per_ml": WEIGHTS_DENSITY_G_PER_ML,
    }


def run_simulated_accuracy(
    rig: RigSettings,
    rate_nl_per_h: int,
    *,
    syringe_diameter_mm: float,
    report_dir: str | Path | None = None,
    on_sample: SampleCallback | None = None,
    limit_pct: float | None = None,
    simulation: dict[str, Any] | None = None,
    **config_fields: Any,
) -> AccuracyResult:
    """Run the accuracy test on a simulated rig whose water is the water of the run's configuration.

    :param rig: the simulated rig; its balance options may not set the water (``noise_ug``,
        ``resolution_ug``... only).
    :param rate_nl_per_h: set rate, nL/h.
    :param syringe_diameter_mm: syringe inner diameter, mm.
    :param report_dir: write the report here.
    :param on_sample: progress callback.
    :param limit_pct: the pass limit on |mean error A|, % (the report's verdict).
    :param simulation: what was simulated, for the report (see :mod:`hil.gravimetric.report`).
    :param config_fields: other :class:`~hil.gravimetric.procedure.AccuracyConfig` fields
        (``water_temperature_c``, ``evaporation_ug_per_h``, ``air_buoyancy_correction``, ``duration_s``...).
    :raises ConfigError: a bad setting, or a balance option that would contradict the run's water;
        nothing is started.
    :raises InsufficientDataError: the data cannot support a result.
    """
    config = AccuracyConfig(rate_nl_per_h=rate_nl_per_h, syringe_diameter_mm=syringe_diameter_mm, **config_fields)
    water = water_options(config)
    given = rig.balance_options or {}
    for name in water:
        if name in given:
            raise ConfigError(f"balance_options.{name}", given[name], "unset: the run's water sets it")
    with simulated_accuracy_rig(replace(rig, balance_options={**given, **water})) as running:
        return procedure.run_accuracy(
            running.pump_url,
            running.balance_url,
            rate_nl_per_h,
            syringe_diameter_mm=syringe_diameter_mm,
            clock=running.clock,
            balance_driver=running.balance_kind,
            report_dir=report_dir,
            on_sample=on_sample,
            limit_pct=limit_pct,
            simulation=simulation,
            **config_fields,
        )
