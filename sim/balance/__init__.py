"""Simulated precision balances fed by a simulated pump's delivered volume.

:func:`create_balance` builds one emulator (MT-SICS or Sartorius SBI) that
speaks the balance's exact bytes through the byte-device protocol of
:mod:`sim.device`; put it on any endpoint of :mod:`sim.endpoints`. The
physics (density at temperature, resolution, noise, drift, evaporation,
settling) live in :mod:`sim.balance.pan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hal.clock import Clock
from cython_ext.errors import ConfigError
from sim.balance.mtsics import MtSicsBalance
from sim.balance.pan import Pan, PanReading, PanSettings
from sim.balance.sbi import SbiBalance

#: Balance kinds -> (emulator class, the device options it takes besides the pan).
BALANCE_KINDS: dict[str, tuple[type, frozenset[str]]] = {
    "mtsics": (
        MtSicsBalance,
        frozenset(
            {
                "model", "product_line", "capacity_text", "serial_number", "firmware", "type_definition",
                "software_id", "balance_id", "unit", "stream_interval_s", "field_width", "stability_timeout_s",
                "display_width",
            }
        ),
    ),
    "sbi": (
        SbiBalance,
        frozenset({"model", "serial_number", "firmware", "unit", "id_codes", "autoprint_interval_s"}),
    ),
}


def create_balance(
    kind: str,
    clock: Clock,
    delivered_nl: Callable[[], int],
    *,
    seed: int = 0,
    **options: Any,
) -> MtSicsBalance | SbiBalance:
    """Build a simulated balance weighing what a simulated pump delivers.

    :param kind: ``"mtsics"`` or ``"sbi"``.
    :param clock: the device clock (a :class:`~sim.clock.VirtualClock` in tests).
    :param delivered_nl: returns the volume delivered into the beaker so far, nL
        (e.g. ``pump.mechanics.actual_delivered_nl``).
    :param seed: seed of the reading noise.
    :param options: physical settings (:class:`~sim.balance.pan.PanSettings`
        fields: ``temperature_c``, ``resolution_ug``, ``noise_ug``,
        ``drift_ug_per_h``, ``evaporation_ug_per_h``, ``settling_s``,
        ``stability_band_ug``, ``initial_load_ug``, ``capacity_ug``,
        ``disturbances_s``, ``air_density_g_per_ml``, ``weights_density_g_per_ml``)
        and device settings of the kind (:data:`BALANCE_KINDS`: model, unit...).
    :raises ConfigError: unknown kind or option, or a bad value; nothing is built.
    :return: the byte device; its pan is at ``.pan``.
    """
    entry = BALANCE_KINDS.get(kind)
    if entry is None:
        raise ConfigError("kind", kind, f"one of {sorted(BALANCE_KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", seed, "an integer")
    device_cls, device_options = entry
    pan_options = {name: value for name, value in options.items() if name not in device_options}
    settings = PanSettings.from_options(pan_options)
    pan = Pan(clock, delivered_nl, settings, seed=seed)
    return device_cls(pan, **{name: value for name, value in options.items() if name in device_options})


__all__ = ["BALANCE_KINDS", "MtSicsBalance", "Pan", "PanReading", "PanSettings", "SbiBalance", "create_balance"]
