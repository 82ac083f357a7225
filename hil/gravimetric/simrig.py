"""A simulated accuracy rig: a simulated NE-1000 and a simulated balance weighing what it delivers.

Both devices run on one :class:`~sim.clock.VirtualClock`, which the accuracy
sampler advances, so a 2 h test takes well under a second. The balance is fed
by the pump mechanics' *actual* delivered volume (with the injected bias and
noise), exactly what a real balance would weigh::

    with simulated_accuracy_rig("mtsics", bias_pct=3.0) as rig:
        result = run_accuracy(rig.pump_url, rig.balance_url, 1_200_000,
                              syringe_diameter_mm=14.5, clock=rig.clock, balance_driver=rig.balance_kind)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from cython_ext.errors import ConfigError
from sim.balance import BALANCE_KINDS, MtSicsBalance, SbiBalance, create_balance
from sim.clock import VirtualClock
from sim.endpoints import InProcessEndpoint, PtyEndpoint
from sim.rig import simulated_pump

#: Links a simulated accuracy rig can use.
RIG_LINKS = ("inprocess", "pty")


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
    balance_kind: str = "mtsics",
    *,
    clock: VirtualClock | None = None,
    link: str = "inprocess",
    seed: int = 0,
    bias_pct: float = 0.0,
    noise_pct: float = 0.0,
    faults: tuple[str, ...] = (),
    pump_options: dict[str, Any] | None = None,
    balance_options: dict[str, Any] | None = None,
) -> Iterator[SimulatedAccuracyRig]:
    """Stand up a simulated pump and balance for the duration of the ``with`` block.

    :param balance_kind: ``"mtsics"`` or ``"sbi"``.
    :param clock: the virtual clock (a new one by default).
    :param link: ``"inprocess"`` (fastest) or ``"pty"`` (a real pseudo-terminal per device).
    :param seed: seed of pump and balance noise.
    :param bias_pct: systematic delivery error injected into the pump mechanics, %.
    :param noise_pct: random delivery noise of the pump mechanics, %.
    :param faults: pump fault specs (:mod:`sim.faults`), e.g. ``("stall:at=3000",)``.
    :param pump_options: other :class:`~sim.newera.Ne1000` keywords.
    :param balance_options: :func:`sim.balance.create_balance` options (``noise_ug``, ``resolution_ug``...).
    :raises ConfigError: unknown kind or link, or a bad option; nothing is left running.
    """
    if balance_kind not in BALANCE_KINDS:
        raise ConfigError("balance_kind", balance_kind, f"one of {sorted(BALANCE_KINDS)}")
    if link not in RIG_LINKS:
        raise ConfigError("link", link, f"one of {RIG_LINKS}")
    clock = clock or VirtualClock()
    with ExitStack() as stack:
        rig = stack.enter_context(
            simulated_pump(
                link,
                clock=clock,
                seed=seed,
                faults=faults,
                bias_pct=bias_pct,
                noise_pct=noise_pct,
                **(pump_options or {}),
            )
        )
        balance = create_balance(
            balance_kind, clock, rig.device.mechanics.actual_delivered_nl, seed=seed, **(balance_options or {})
        )
        endpoint = InProcessEndpoint(balance) if link == "inprocess" else PtyEndpoint(balance)
        stack.enter_context(endpoint)
        yield SimulatedAccuracyRig(rig.url, endpoint.url, balance_kind, clock, rig.device, balance)


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
    """Serve a simulated balance alone (blank runs, wiring checks).

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
