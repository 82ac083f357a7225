"""The driver registry resolves names lazily and turns every load failure into HalUnavailableError."""

from __future__ import annotations

import pytest

import hal
from hal import registry
from cython_ext.errors import ConfigError, HalUnavailableError


def test_unknown_pump_name_is_unavailable() -> None:
    with pytest.raises(HalUnavailableError, match="no pump driver named 'nope'"):
        registry.resolve("pump", "nope")


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve("valve", "x")
    assert info.value.field == "kind"
    with pytest.raises(ConfigError):
        registry.names("valve")


def test_missing_module_is_unavailable_with_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PUMP_DRIVERS, "ghost", ("hal.no_such_module", "Ghost"))
    with pytest.raises(HalUnavailableError) as info:
        registry.resolve("pump", "ghost")
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_class_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PUMP_DRIVERS, "ghost", ("cython_ext.errors", "NoSuchClass"))
    with pytest.raises(HalUnavailableError, match="has no class NoSuchClass"):
        registry.resolve("pump", "ghost")


def test_open_pump_with_unknown_name_opens_nothing() -> None:
    with pytest.raises(HalUnavailableError):
        hal.open_pump("nope", "loop://")


def test_ne1000_is_registered() -> None:
    assert "ne1000" in registry.names("pump")
    assert isinstance(registry.names("balance"), tuple)
