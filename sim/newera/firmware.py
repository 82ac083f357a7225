"""NE-1000 firmware emulation on a byte stream (Basic and Safe mode).

Written from the manual (reference/pump-protocols.md §1), sharing only the
framing and CRC code (:mod:`hal.newera.framing`) with the driver.

Packet handling, in order:

1. bytes are split into packets by :class:`sim.newera.deframer.PumpDeframer`:
   CR-terminated Basic packets (ignored in Safe mode), and length-framed Safe
   packets (any packet that starts with STX, in either mode; a partial Safe
   packet is discarded after a 0.5 s gap between bytes, and in Safe mode
   bytes between packets are dropped while hunting for STX);
2. command data is normalised: spaces and control characters removed,
   upper-cased;
3. the address is split off: ``*`` marks a system command (answered whatever
   the pump's address), one or two digits address one pump (others stay
   silent), no digits at all is accepted by any pump;
4. a packet holding bytes outside printable ASCII is answered ``?COM``;
   a latched alarm answers the first valid command with ``A?<x>`` instead of
   executing it, which acknowledges the alarm;
5. the command is looked up in :data:`COMMANDS` (each entry: a parameter
   pattern per form, integer limits answered ``?OOR``, and a handler);
   anything not modelled gets ``?``. A Basic packet holding ``*`` separators
   is a network burst: the pump runs only the parts addressed to it.

Limits that differ by model and firmware come from a
:class:`~sim.newera.profile.DeviceProfile`.

Replies: ``<addr:2 digits><prompt>[<data>]`` framed like the request (Basic
``STX..ETX`` or a Safe packet). Errors are data after the prompt: ``?``,
``?NA``, ``?OOR``, ``?COM``.

Modelling choices where the manual is silent (pump-protocols §6) are listed
in :class:`Ne1000`'s docstring.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from hal.clock import NS_PER_S, Clock
from cython_ext.errors import ConfigError
from hal.newera.framing import Frame, FrameError, FrameKind, encode_reply
from sim.device import ByteDevice
from sim.newera.deframer import PumpDeframer
from sim.newera.mechanics import INFUSE, NL_PER_ML, NS_PER_H, WITHDRAW, Mechanics
from sim.newera.profile import NE1000_V3_928, DeviceProfile
from sim.newera.wire_numbers import format_milli, parse_milli

#: Limits of the default profile, kept as module constants for callers that want them.
PHASE_COUNT = NE1000_V3_928.phase_count
BAUD_RATES = NE1000_V3_928.baud_rates
DIAMETER_MIN_MILLI = NE1000_V3_928.diameter_min_milli
DIAMETER_MAX_MILLI = NE1000_V3_928.diameter_max_milli
UL_DIAMETER_LIMIT_MILLI = NE1000_V3_928.ul_diameter_limit_milli
MAX_SPEED_CM_PER_MIN = NE1000_V3_928.max_speed_cm_per_min
MIN_SPEED_CM_PER_H = NE1000_V3_928.min_speed_cm_per_h

#: nL/h per thousandth of each rate unit.
RATE_UNIT_NL_PER_H_PER_MILLI = {"UH": 1, "MH": 1000, "UM": 60, "MM": 60_000}
#: nL per thousandth of each volume unit.
VOLUME_UNIT_NL_PER_MILLI = {"UL": 1, "ML": 1000}

ALARM_RESET = "R"
ALARM_STALL = "S"
ALARM_TIMEOUT = "T"
ALARM_PROGRAM = "E"
ALARM_OUT_OF_RANGE = "O"

ERR_UNKNOWN = "?"
ERR_NOT_APPLICABLE = "?NA"
ERR_OUT_OF_RANGE = "?OOR"
ERR_COM = "?COM"

_CONTROL_CHARS = bytes(range(0x20)) + b"\x7f "
_ADDRESS_RE = re.compile(r"^(\*|\d{1,2})?(.*)$")


def normalise(data: bytes) -> str:
    """Strip spaces and control characters and upper-case, as the pump does on receipt."""
    return data.translate(None, _CONTROL_CHARS).decode("latin-1").upper()


def rate_envelope_nl_per_h(diameter_mm: float, profile: DeviceProfile = NE1000_V3_928) -> tuple[float, float]:
    """Lowest and highest rate the mechanism can drive a syringe of ``diameter_mm`` at, nL/h.

    ``Qmin[mL/h] = pi (d/20)^2 * 0.004205`` and ``Qmax[mL/min] = pi (d/20)^2 * 5.1005``
    (the speeds come from ``profile``).
    """
    area_cm2 = math.pi * (diameter_mm / 20.0) ** 2
    return (
        area_cm2 * profile.min_speed_cm_per_h * NL_PER_ML,
        area_cm2 * profile.max_speed_cm_per_min * 60 * NL_PER_ML,
    )


def _as_milli(field_name: str, value: object, low: int, high: int) -> int:
    """Convert a config number (str, int or float given as a decimal) to thousandths."""
    try:
        dec = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(field_name, value, f"a decimal number in [{low / 1000}, {high / 1000}]") from None
    milli = dec * 1000
    if milli != milli.to_integral_value() or not low <= milli <= high:
        raise ConfigError(field_name, value, f"a number with <= 3 decimals in [{low / 1000}, {high / 1000}]")
    return int(milli)


#: Phase functions that pump (state I or W while they run).
PUMPING_FUNCTIONS = ("RAT", "INC", "DEC")
#: Phase functions that take a number: its allowed values.
FUNCTION_ARGUMENTS = {"JMP": range(1, 1000), "LOP": range(1, 100), "PAS": range(0, 100), "IF": range(1, 1000),
                      "EVN": range(1, 1000), "OUT": range(0, 2)}


@dataclass
class Phase:
    """One Pumping Program phase: its function and the data a pumping phase uses.

    :ivar function: ``RAT`` (pump at the rate), ``INC``/``DEC`` (pump at the
        previous rate plus or minus this phase's rate), ``STP`` (end the
        program), ``JMP n``, ``LOP n``, ``LPS``, ``LPE``, ``PAS n`` (timed
        pause, s), ``IF n``, ``EVN n``, ``EVR``, ``BEP``, ``OUT n``.
    :ivar argument: the number of ``JMP LOP PAS IF EVN OUT`` (phase, count, seconds or level).
    :ivar volume_milli: volume to dispense in this phase, thousandths of the volume units (0: continuous).
    """

    function: str = "RAT"
    rate_milli: int = 10_000
    rate_units: str = "UH"
    volume_milli: int = 0
    direction: str = "INF"
    argument: int = 0

    @property
    def rate_nl_per_h(self) -> int:
        """Phase rate, nL/h."""
        return self.rate_milli * RATE_UNIT_NL_PER_H_PER_MILLI[self.rate_units]

    @property
    def function_text(self) -> str:
        """The function as the ``FUN`` query answers it (``RAT``, ``JMP5``...)."""
        return f"{self.function}{self.argument}" if self.function in FUNCTION_ARGUMENTS else self.function


def _default_phases(count: int) -> list[Phase]:
    return [Phase()] + [Phase(function="STP") for _ in range(count - 1)]


@dataclass(frozen=True)
class _Form:
    """One accepted form of a command.

    :ivar pattern: full-match pattern for the parameter text after the mnemonic.
    :ivar handler: ``Ne1000._cmd_<handler>`` runs when the pattern and the limits pass.
    :ivar limits: per capture group, the allowed integer values (None: not checked here);
        a value outside them is answered ``?OOR`` and the handler does not run.
    """

    pattern: re.Pattern[str]
    handler: str
    limits: tuple[range | None, ...] = ()


@dataclass(frozen=True)
class CommandSpec:
    """A declarative command table entry.

    :ivar name: command mnemonic after normalisation (``RAT``, ``*ADR`` is ``ADR`` with ``system``).
    :ivar forms: parameter patterns tried in order; the first full match picks the handler.
    :ivar system: True for ``*`` commands.
    :ivar bad_parameter: reply data when no form matches.
    """

    name: str
    forms: tuple[_Form, ...]
    system: bool = False
    bad_parameter: str = ERR_UNKNOWN


def _spec(name: str, *forms: tuple[Any, ...], system: bool = False, bad: str = ERR_UNKNOWN) -> CommandSpec:
    """Build a table entry from ``(pattern, handler[, limits])`` tuples."""
    built = tuple(_Form(re.compile(f"^{f[0]}$"), f[1], f[2] if len(f) > 2 else ()) for f in forms)
    return CommandSpec(name, built, system, bad)


_BIT = (range(0, 2),)


_NUM = r"([0-9.]+)"
_FUNCTIONS = r"(RAT|INC|DEC|STP|LPS|LPE|EVR|BEP|JMP|LOP|PAS|IF|EVN|OUT)(\d{1,3})?"

#: The command table. Handlers are ``Ne1000._cmd_<handler>(match) -> str`` returning reply data.
#: Not in it, so answered ``?`` as by NE-1000 firmware that lacks them: ``RAT C`` and ``RAT I`` (rate
#: change and infuse-rate forms of later firmware; reference/pump-protocols.md §1.3 and §6).
COMMANDS: tuple[CommandSpec, ...] = (
    _spec("VER", ("", "ver")),
    _spec("DIA", ("", "dia_query"), (_NUM, "dia_set")),
    _spec("RAT", ("", "rat_query"), (_NUM + r"(UM|MM|UH|MH)?", "rat_set")),
    _spec("VOL", ("", "vol_query"), (_NUM, "vol_set"), (r"(UL|ML)", "vol_units")),
    _spec("DIR", ("", "dir_query"), (r"(INF|WDR|REV|STK)", "dir_set")),
    _spec("RUN", ("", "run"), (r"(\d{1,3})", "run")),
    _spec("PUR", ("", "purge")),
    _spec("STP", ("", "stop")),
    _spec("DIS", ("", "dispensed")),
    _spec("CLD", (r"(INF|WDR)", "clear")),
    _spec("SAF", ("", "saf_query"), (r"(\d{1,3})", "saf_set", (range(0, 256),))),
    _spec("PHN", ("", "phn_query"), (r"(\d{1,3})", "phn_set")),
    _spec("FUN", ("", "fun_query"), (_FUNCTIONS, "fun_set")),
    _spec("AL", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("PF", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("BP", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("LOC", ("", "flag_query"), (r"(\d)", "flag_set", _BIT), (r"P", "locp_query"), (r"P(\d)", "locp_set", _BIT)),
    _spec("DIN", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("ROM", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("LN", ("", "flag_query"), (r"(\d)", "flag_set", _BIT)),
    _spec("BUZ", ("", "buz_query"), (r"(\d)(\d{1,2})?", "buz_set", _BIT)),
    _spec("TRG", ("", "trg_query"), (r"(FT|FH|F2|FL|LE|ST|T2)", "trg_set")),
    _spec("IN", (r"(\d)", "in_query")),
    _spec("OUT", (r"(\d)", "out_query"), (r"(\d)(\d)", "out_set", (None, range(0, 2)))),
    _spec(
        "ADR",
        ("", "adr_query"),
        (r"(\d{1,3})(?:B(\d{3,5}))?(DUAL|RECP)?", "adr_set", (range(0, 100),)),
        system=True,
    ),
    _spec("RESET", ("", "reset"), system=True),
)
#: TTL input pins ``IN n`` reads (trigger, direction, operational trigger, start/stop); pulled high when open.
TTL_INPUT_PINS = (2, 3, 4, 6)
#: The TTL output pin ``OUT 5 n`` drives.
TTL_OUTPUT_PIN = 5
_COMMANDS_BY_NAME = {(c.name, c.system): c for c in COMMANDS}
#: Handlers that only read: no motion, phase, alarm, watchdog or pause changes, so they leave an instant
#: whose events are all handled (``Ne1000._settled_ns``) as it was.
_READ_ONLY_HANDLERS = frozenset({
    "ver", "dia_query", "rat_query", "vol_query", "dir_query", "dispensed", "saf_query", "phn_query", "fun_query",
    "flag_query", "locp_query", "buz_query", "trg_query", "in_query", "out_query", "adr_query"})
_NAMES = frozenset(c.name for c in COMMANDS)
#: Lengths of the mnemonics, longest first: a command's name is its longest prefix that is one.
_NAME_SIZES_LONGEST_FIRST = sorted({len(name) for name in _NAMES}, reverse=True)


@functools.lru_cache(maxsize=512)
def _command_name(command: str) -> str | None:
    """The longest command name that ``command`` starts with, or None (the same texts recur all day)."""
    return next((n for n in (command[:size] for size in _NAME_SIZES_LONGEST_FIRST) if n in _NAMES), None)


@functools.lru_cache(maxsize=1024)
def _parse_command(command: str, system: bool) -> tuple[_Form | None, re.Match[str] | None, str, str]:
    """Which form of which command ``command`` is: ``(form, match, name, handler method name)``, or
    ``(None, None, name, reply)`` when it is refused before any handler runs (unknown, a bad parameter,
    out of range).

    Pure text work on the command table (the same texts recur all day, and a match object is never changed).
    """
    name = _command_name(command)
    spec = None
    if name is not None:
        # '*' reaches every pump: system commands, and any other command addressed to all.
        spec = _COMMANDS_BY_NAME.get((name, True)) if system else None
        spec = spec or _COMMANDS_BY_NAME.get((name, False))
    if spec is None or name is None:
        return None, None, "", ERR_UNKNOWN
    params = command[len(name):]
    for form in spec.forms:
        m = form.pattern.match(params)
        if m is not None:
            for group, allowed in enumerate(form.limits, start=1):
                if allowed is not None and m.group(group) is not None and int(m.group(group)) not in allowed:
                    return None, None, name, ERR_OUT_OF_RANGE
            return form, m, name, f"_cmd_{form.handler}"
    return None, None, name, spec.bad_parameter


class Ne1000(ByteDevice):
    """A simulated New Era NE-1000 syringe pump, byte for byte.

    :param clock: the device clock (virtual in tests, scaled real time in ``itb sim serve``).
    :param address: network address, 0-99.
    :param seed: seed of the delivery-noise generator.
    :param bias_pct: systematic delivery error of the mechanism, percent.
    :param noise_pct: random delivery error (std dev per noise chunk), percent.
    :param syringe_diameter_mm: inside diameter loaded at start, mm (decimal, <= 3 decimals).
    :param syringe_volume_ml: syringe capacity, mL (decimal).
    :param fill_ml: syringe contents at start, mL (default: full).
    :param safe_timeout_s: start in Safe mode with this watchdog, s (0: Basic mode).
    :param power_on_alarm: latch ``A?R`` at start, as after a real power-up.
    :param bad_packet_reply: ``"com"`` answers a corrupt Safe packet with ``?COM``; ``"silent"`` drops it.
    :param occlusion_delay_s: time infusing against an occlusion before the motor stalls, s.
    :param dose_step_nl: volume of one motor step, nL (0: continuous flow; see :class:`Mechanics`).
    :param firmware_version: the ``VER`` reply (default: the profile's).
    :param profile: model and firmware limits (:mod:`sim.newera.profile`).

    Modelling choices where the manual is silent:

    * phases 2-41 default to ``STP``, phase 1 to ``RAT`` 10 µL/h, so a one-phase
      program with a volume stops by itself when the volume is reached;
    * ``STP`` while stopped is accepted (status only); ``RUN`` while running too;
    * Basic packets are ignored in Safe mode; a Safe packet is accepted in
      Basic mode and answered in Safe framing (that is how ``SAF0`` returns a
      pump to Basic mode);
    * counters are reported truncated to the display's 4 digits (values of
      10000 display units and more print as whole numbers);
    * purging counts as infused volume; ``STP`` ends a purge (status ``S``);
    * an alarm raised by the command itself (``RUN`` of an out-of-range phase:
      ``A?O``) is the reply to that command, which acknowledges it;
    * after a power loss without ``PF 1`` a pumping program is stopped, a paused
      one stays paused; rates changed while pumping revert to the stored ones;
    * occlusion stalls the motor ``occlusion_delay_s`` after infusion starts
      against it (pressure build-up); end of travel stalls at once.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        address: int = 0,
        seed: int = 0,
        bias_pct: float = 0.0,
        noise_pct: float = 0.0,
        syringe_diameter_mm: str | float = "8.585",
        syringe_volume_ml: str | float = "3",
        fill_ml: str | float | None = None,
        safe_timeout_s: int = 0,
        power_on_alarm: bool = True,
        bad_packet_reply: str = "com",
        occlusion_delay_s: float = 0.5,
        dose_step_nl: int = 0,
        firmware_version: str | None = None,
        profile: DeviceProfile = NE1000_V3_928,
    ) -> None:
        if not isinstance(address, int) or not 0 <= address <= 99:
            raise ConfigError("address", address, "an int in [0, 99]")
        if not isinstance(safe_timeout_s, int) or not 0 <= safe_timeout_s <= 255:
            raise ConfigError("safe_timeout_s", safe_timeout_s, "an int in [0, 255] s")
        if bad_packet_reply not in ("com", "silent"):
            raise ConfigError("bad_packet_reply", bad_packet_reply, "'com' or 'silent'")
        if not occlusion_delay_s >= 0:
            raise ConfigError("occlusion_delay_s", occlusion_delay_s, ">= 0 s")
        if not isinstance(profile, DeviceProfile):
            raise ConfigError("profile", profile, "a sim.newera.profile.DeviceProfile")
        self.profile = profile
        diameter_milli = _as_milli(
            "syringe_diameter_mm", syringe_diameter_mm, profile.diameter_min_milli, profile.diameter_max_milli
        )
        volume_ul = _as_milli("syringe_volume_ml", syringe_volume_ml, 1, 1_000_000)
        fill_ul = None if fill_ml is None else _as_milli("fill_ml", fill_ml, 0, volume_ul)
        self._lock = threading.RLock()
        self.clock = clock
        self.mechanics = Mechanics(
            clock,
            syringe_volume_nl=volume_ul * 1000,
            fill_nl=None if fill_ul is None else fill_ul * 1000,
            bias_pct=bias_pct,
            noise_pct=noise_pct,
            dose_step_nl=dose_step_nl,
            seed=seed,
        )
        self.mechanics.sync = self._sync
        self.mechanics.lock = self._lock
        self.firmware_version = profile.version_reply if firmware_version is None else firmware_version
        self.bad_packet_reply = bad_packet_reply
        self.occlusion_delay_ns = round(occlusion_delay_s * NS_PER_S)
        self._deframer = PumpDeframer()
        self._unsolicited = bytearray()  # bytes waiting to leave without a request
        self._advancing = False
        #: The device time (ns) at which every due event was handled, if nothing changed since, else None:
        #: a device polled, asked a query and polled again at one instant runs the event search once.
        self._settled_ns: int | None = None
        # Persistent settings (non-volatile memory).
        self.address = address
        self.baud = 19200
        self.safe_timeout_s = safe_timeout_s
        self.diameter_milli = diameter_milli
        self.volume_units = self._units_for_diameter(diameter_milli)
        self.phases = _default_phases(self.profile.phase_count)
        self._stored_rates: dict[int, int] = {}  # phase index -> non-volatile rate (thousandths)
        self.selected_phase = 0
        self.flags: dict[str, int] = {"AL": 0, "PF": 0, "BP": 1, "LOC": 0, "LOCP": 0, "DIN": 0, "ROM": 0, "LN": 0}
        #: TTL input levels by pin (1: high, the level of an open input).
        self.ttl_inputs: dict[int, int] = dict.fromkeys(TTL_INPUT_PINS, 1)
        self.ttl_output = 0
        #: Beeps sounded by ``BEP`` phases.
        self.beeps = 0
        self.buzzer = (0, 0)
        self.trigger_mode = "FT"
        self.sticky_direction = False
        self.adr_mode = ""
        # Run state.
        self.state = "S"  # S stopped, P paused, I/W pumping, X purging
        self.running_phase = 0
        self._phase_moved_scaled = 0
        self._running_rate_nl_per_h = 0
        self._pause_deadline_ns: int | None = None
        self._loop_counts: dict[int, int] = {}
        self._event_phase: int | None = None
        self.alarm: str | None = None
        self.powered = True
        self._was_running_at_power_loss = False
        self._last_valid_ns: int | None = None
        self.occluded = False
        self.motor_seized = False
        self._occluded_since_ns: int | None = None
        self._motion_since_ns: int | None = None
        self._counter_offsets_scaled = [0, 0]  # infused, withdrawn at last CLD
        #: Every executed command: (device time ns, normalised command text).
        self.executed: deque[tuple[int, str]] = deque(maxlen=1000)
        if power_on_alarm:
            self._raise_alarm(ALARM_RESET)

    # -- ByteDevice -----------------------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        """Consume host bytes at the clock's now; return the pump's answer (Basic or Safe framed)."""
        with self._lock:
            now = self.clock.monotonic_ns()
            self._advance(now)
            if not self.powered:
                return b""
            out = bytearray(self._take_unsolicited())
            done = 0
            while done < len(data):
                # Packet by packet: a packet that switches mode changes how the next byte is framed.
                items, used = self._deframer.feed_to_frame(data[done:], now / NS_PER_S,
                                                           safe_mode=self.safe_timeout_s > 0)
                done += used
                for item in items:
                    out += self._handle_packet(item, now)
            return bytes(out)

    def poll(self) -> bytes:
        """Advance to now and return unsolicited Safe-mode alarm packets that are due."""
        with self._lock:
            now = self.clock.monotonic_ns()
            if now != self._settled_ns:  # else nothing is due: the endpoints poll at every read
                self._advance(now)
            return self._take_unsolicited() if self._unsolicited and self.powered else b""

    def next_poll_ns(self) -> int | None:
        """Device time of the next event (watchdog, target volume, end of travel, occlusion stall)."""
        with self._lock:
            times = [t for t in (self._watchdog_deadline(), self._next_motion_event()[0]) if t is not None]
            return min(times) if times else None

    # -- status ---------------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        """The status character a reply would carry now (ignoring a latched alarm)."""
        return self.state

    @property
    def safe_mode(self) -> bool:
        """True when the pump is in Safe mode."""
        return self.safe_timeout_s > 0

    def dispensed_nl(self) -> tuple[int, int]:
        """The pump's own counters since the last ``CLD``: (infused, withdrawn), whole nL."""
        with self._lock:
            self._sync()
            inf = (self.mechanics.infused_scaled - self._counter_offsets_scaled[0]) // NS_PER_H
            wdr = (self.mechanics.withdrawn_scaled - self._counter_offsets_scaled[1]) // NS_PER_H
            return inf, wdr

    # -- fault hooks ----------------------------------------------------------------------
    def inject_stall(self) -> None:
        """Stall the motor now: stop, latch ``A?S`` (and send it unprompted in Safe mode)."""
        with self._lock:
            self._sync()
            self._stall()
            self._settled_ns = None

    def seize_motor(self, seized: bool) -> None:
        """Seize (True) or free (False) the motor. A seized motor does not turn, and the pump does not notice: it
        takes ``RUN`` and reports ``I`` while neither plunger nor counter moves (a pump that fails to restart
        after an MRI, SAFE-05 [FDA-MRI17]). Freed, a running phase moves again at its rate."""
        with self._lock:
            self._sync()
            self.motor_seized = bool(seized)
            if self.state in ("I", "W") and self.powered:
                phase = self.phases[self.running_phase]
                direction = INFUSE if phase.direction == "INF" else WITHDRAW
                self.mechanics.set_motion(0 if self.motor_seized else self._running_rate_nl_per_h, direction)
            self._settled_ns = None

    def set_occluded(self, occluded: bool) -> None:
        """Block (True) or clear (False) the outlet. Infusing against a block stalls after ``occlusion_delay_s``."""
        with self._lock:
            self._sync()
            self.occluded = bool(occluded)
            self._occluded_since_ns = self.mechanics.time_ns if occluded else None
            self._settled_ns = None

    def power_loss(self) -> None:
        """Cut power: the motor stops, bytes are ignored, nothing is sent."""
        with self._lock:
            if not self.powered:
                return
            self._sync()
            self._was_running_at_power_loss = self.state in ("I", "W")
            for index, rate_milli in self._stored_rates.items():
                self.phases[index].rate_milli = rate_milli
            self._stored_rates.clear()
            self.mechanics.stop()
            self._motion_since_ns = None
            self.powered = False
            self._deframer.reset()
            self._unsolicited.clear()
            self._settled_ns = None

    def power_restore(self) -> None:
        """Restore power: latch ``A?R``; with ``PF 1`` a program that was running resumes.

        In Safe mode the reset alarm is sent unprompted and the watchdog stays
        disarmed until the first valid packet.
        """
        with self._lock:
            if self.powered:
                return
            self.mechanics.integrate_to(max(self.mechanics.time_ns, self.clock.monotonic_ns()))
            self.powered = True
            self._last_valid_ns = None
            if self.flags["PF"] == 1 and self._was_running_at_power_loss:
                self._start_phase_motion()
            elif self.state in ("I", "W", "X"):
                self._stop_program()
            self._raise_alarm(ALARM_RESET)
            self._settled_ns = None

    def power_cycle(self) -> None:
        """Power loss immediately followed by power restore."""
        with self._lock:
            self.power_loss()
            self.power_restore()

    def refill(self, fill_ml: str | float) -> None:
        """Change the syringe contents (only while the plunger is still), mL."""
        with self._lock:
            self._sync()
            if self.mechanics.moving:
                raise ConfigError("state", self.state, "stopped or paused to refill")
            fill_ul = _as_milli("fill_ml", fill_ml, 0, self.mechanics.syringe_volume_nl // 1000)
            self.mechanics.refill(fill_ul * 1000)
            self._settled_ns = None

    # -- time and events ------------------------------------------------------------------
    def _sync(self) -> None:
        with self._lock:
            if not self._advancing:
                self._advance(max(self.mechanics.time_ns, self.clock.monotonic_ns()))

    def _watchdog_deadline(self) -> int | None:
        if not self.safe_mode or self._last_valid_ns is None or not self.powered:
            return None
        return self._last_valid_ns + self.safe_timeout_s * NS_PER_S

    def _next_motion_event(self) -> tuple[int | None, Callable[[], None] | None]:
        """The earliest motion event (end of travel, phase volume reached, occlusion stall) and its action.

        Ties go to the first in that order.
        """
        mech = self.mechanics
        if not mech.moving or not self.powered:
            return None, None
        t0 = mech.time_ns
        best_t: int | None = None
        best: Callable[[], None] | None = None
        travel = mech.travel_left_scaled()
        if travel is not None:
            dt = mech.time_to_move_ns(travel)
            if dt is not None:
                best_t, best = t0 + dt, self._stall
        if self.state in ("I", "W"):
            target = self._phase_target_scaled()
            if target:
                dt = mech.time_to_move_ns(target - self._phase_moved_scaled)
                if dt is not None and (best_t is None or t0 + dt < best_t):
                    best_t, best = t0 + dt, self._phase_complete
        if self.occluded and mech.direction == INFUSE and self._occluded_since_ns is not None:
            since = t0 if self._motion_since_ns is None else self._motion_since_ns
            t_stall = max(t0, max(self._occluded_since_ns, since) + self.occlusion_delay_ns)
            if best_t is None or t_stall < best_t:
                best_t, best = t_stall, self._stall
        return best_t, best

    def _advance(self, now_ns: int) -> None:
        if self._advancing or now_ns == self._settled_ns:
            return
        self._advancing = True
        try:
            settled = False
            for _ in range(10_000):
                # The earliest event due by now; ties go to motion, then the watchdog, then a pause's end.
                t_event, event = self._next_motion_event()
                t_watch = self._watchdog_deadline()
                if t_watch is not None and (t_event is None or t_watch < t_event):
                    t_event, event = t_watch, self._watchdog_expired
                t_pause = self._pause_deadline()
                if t_pause is not None and (t_event is None or t_pause < t_event):
                    t_event, event = t_pause, self._pause_over
                if t_event is None or t_event > now_ns or event is None:
                    settled = True
                    break
                self._integrate(max(t_event, self.mechanics.time_ns))
                event()
            self._integrate(max(now_ns, self.mechanics.time_ns))
            self._settled_ns = now_ns if settled and self.mechanics.time_ns == now_ns else None
        finally:
            self._advancing = False

    def _integrate(self, t_ns: int) -> None:
        mech = self.mechanics
        if t_ns <= mech.time_ns:
            return  # already there: nothing moves (most exchanges ask again at the same instant)
        before = mech.infused_scaled + mech.withdrawn_scaled
        mech.integrate_to(t_ns)
        if self.state in ("I", "W"):
            self._phase_moved_scaled += mech.infused_scaled + mech.withdrawn_scaled - before

    def _phase_target_scaled(self) -> int:
        phase = self.phases[self.running_phase]
        return phase.volume_milli * VOLUME_UNIT_NL_PER_MILLI[self.volume_units] * NS_PER_H

    def _phase_complete(self) -> None:
        self._enter_phase(self.running_phase + 1)

    def _pause_deadline(self) -> int | None:
        return self._pause_deadline_ns if self.state == "T" and self.powered else None

    def _pause_over(self) -> None:
        self._pause_deadline_ns = None
        self._enter_phase(self.running_phase + 1)

    def _enter_phase(self, index: int) -> None:
        """Run the program from phase ``index`` (0-based) until a phase that takes time, or the end.

        Control phases (``JMP LOP LPS LPE IF EVN EVR BEP OUT``) act at once;
        ``STP`` ends the program; a pumping phase starts its motion; ``PAS n``
        waits n seconds (status ``T``). A phase out of range latches ``A?O``;
        a program that loops through control phases without ever taking time
        latches ``A?E``.
        """
        count = self.profile.phase_count
        for _ in range(4 * count + 400):
            if not 0 <= index < count:
                self._stop_program()
                self._raise_alarm(ALARM_OUT_OF_RANGE, unsolicited=False)
                return
            phase = self.phases[index]
            self.running_phase, self._phase_moved_scaled = index, 0
            function = phase.function
            if function == "STP":
                self._stop_program()
                return
            if function in PUMPING_FUNCTIONS:
                rate = phase.rate_nl_per_h
                if function == "INC":
                    rate = self._running_rate_nl_per_h + rate
                elif function == "DEC":
                    rate = self._running_rate_nl_per_h - rate
                self._running_rate_nl_per_h = rate
                self._start_phase_motion()
                return
            if function == "PAS" and phase.argument > 0:
                self.mechanics.stop()
                self._motion_since_ns = None
                self.state = "T"
                self._pause_deadline_ns = self.mechanics.time_ns + phase.argument * NS_PER_S
                return
            index = self._control_phase(index, phase)
        self._stop_program()
        self._raise_alarm(ALARM_PROGRAM, unsolicited=False)

    def _control_phase(self, index: int, phase: Phase) -> int:
        """Act on a phase that takes no time; return the index of the phase that follows."""
        function, argument = phase.function, phase.argument
        if function == "JMP":
            return argument - 1
        if function == "IF":
            return argument - 1 if self.ttl_inputs[2] == 0 else index + 1
        if function == "LOP":
            done = self._loop_counts.get(index, 0)
            if done < argument:
                self._loop_counts[index] = done + 1
                starts = [i for i in range(index) if self.phases[i].function == "LPS"]
                return starts[-1] + 1 if starts else 0
            self._loop_counts.pop(index, None)
        elif function == "EVN":
            self._event_phase = argument - 1
        elif function == "EVR":
            self._event_phase = None
        elif function == "BEP":
            self.beeps += 1
        elif function == "OUT":
            self.ttl_output = argument
        return index + 1

    def _watchdog_expired(self) -> None:
        self._last_valid_ns = None
        self._stop_program()
        self._raise_alarm(ALARM_TIMEOUT)

    def _stall(self) -> None:
        self._stop_program()
        self._raise_alarm(ALARM_STALL)

    def _stop_program(self) -> None:
        self.mechanics.stop()
        self._motion_since_ns = None
        self.state = "S"
        self.running_phase = 0
        self._phase_moved_scaled = 0
        self._pause_deadline_ns = None
        self._loop_counts.clear()
        self._event_phase = None

    def _raise_alarm(self, code: str, *, unsolicited: bool = True) -> None:
        self.alarm = code
        if unsolicited and self.safe_mode and self.powered:
            self._unsolicited += encode_reply(f"{self.address:02d}A?{code}".encode("ascii"), safe=True)

    def _take_unsolicited(self) -> bytes:
        if not self._unsolicited:
            return b""
        data = bytes(self._unsolicited)
        self._unsolicited.clear()
        return data

    # -- motion ---------------------------------------------------------------------------
    def _rate_in_envelope(self, rate_nl_per_h: int) -> bool:
        low, high = rate_envelope_nl_per_h(self.diameter_milli / 1000, self.profile)
        return low <= rate_nl_per_h <= high

    def _start_phase_motion(self) -> bool:
        """Start (or resume) the running pumping phase; latch ``A?O`` if its rate is out of range."""
        phase = self.phases[self.running_phase]
        if phase.function == "RAT":
            self._running_rate_nl_per_h = phase.rate_nl_per_h
        rate = self._running_rate_nl_per_h
        if phase.function not in PUMPING_FUNCTIONS or not self._rate_in_envelope(rate):
            self._stop_program()
            self._raise_alarm(ALARM_OUT_OF_RANGE, unsolicited=False)
            return False
        direction = INFUSE if phase.direction == "INF" else WITHDRAW
        self.state = "I" if direction == INFUSE else "W"
        self.mechanics.set_motion(0 if self.motor_seized else rate, direction)
        self._motion_since_ns = self.mechanics.time_ns
        return True

    # -- packets --------------------------------------------------------------------------
    def _handle_packet(self, item: Frame | FrameError, now: int) -> bytes:
        if isinstance(item, FrameError):
            if item.reason in ("crc", "length", "no_etx") and self.bad_packet_reply == "com":
                return self._frame(self._status() + ERR_COM)
            return b""
        safe = item.kind is FrameKind.SAFE
        text = normalise(item.data)
        if self.safe_timeout_s > 0 and not safe and not text.startswith("*"):
            return b""  # Safe mode ignores Basic packets, except the '*' commands that bypass it
        if "*" in text[1:] and not text.startswith("*"):
            # Network burst "<n> <command> * <m> <command> *": each pump runs its own parts.
            parts = [part for part in text.split("*") if part]
            return b"".join(self._handle_command(part, safe, now, burst=True) for part in parts)
        return self._handle_command(text, safe, now)

    def _handle_command(self, text: str, safe: bool, now: int, *, burst: bool = False) -> bytes:
        match = _ADDRESS_RE.match(text)
        assert match is not None  # the pattern matches any string
        addr_text, command = match.group(1), match.group(2)
        system = addr_text == "*"
        if burst and (addr_text is None or len(addr_text) != 1):
            return b""  # burst addresses are single digits
        if not system and addr_text is not None and int(addr_text) != self.address:
            return b""
        if not command.isascii() or not (command.isprintable()):
            # Bytes no command can hold: an invalid packet. It acknowledges nothing.
            return self._frame(self._status() + ERR_COM)
        if safe and self.safe_timeout_s > 0:
            self._last_valid_ns = now
        if self.alarm is not None:
            code, self.alarm = self.alarm, None
            return self._frame(f"A?{code}")
        data = self._execute(command, system, now)
        if self.alarm is not None:
            code, self.alarm = self.alarm, None
            return self._frame(f"A?{code}")
        return self._frame(self._status() + data)

    def _status(self) -> str:
        return f"A?{self.alarm}" if self.alarm is not None else self.state

    def _frame(self, body: str) -> bytes:
        """Frame a reply in the mode in effect now, that is after the command (manual: SAF's own reply)."""
        return encode_reply(f"{self.address:02d}{body}".encode("ascii"), safe=self.safe_timeout_s > 0)

    def _execute(self, command: str, system: bool, now: int) -> str:
        if not command:
            return ""
        form, m, name, method = _parse_command(command, system)
        if form is None:
            return method  # the refusal
        reply: str = getattr(self, method)(m, name)
        if form.handler not in _READ_ONLY_HANDLERS:
            self._settled_ns = None
        if not reply.startswith("?"):
            self.executed.append((now, command))
        return reply

    # -- helpers for handlers -------------------------------------------------------------
    def _units_for_diameter(self, diameter_milli: int) -> str:
        return "UL" if diameter_milli <= self.profile.ul_diameter_limit_milli else "ML"

    @property
    def _pumping(self) -> bool:
        return self.state in ("I", "W", "X")

    def _idle_setting(self, text: str) -> tuple[int | None, str]:
        """A setting's ``<float>`` in thousandths, ``(value, "")``, or ``(None, reply)`` when it is not a
        number (``?``) or the pump is moving (``?NA``), checked in that order."""
        value = parse_milli(text)
        if value is None:
            return None, ERR_UNKNOWN
        if self._pumping:
            return None, ERR_NOT_APPLICABLE
        return value, ""

    def _edit_phase_index(self) -> int:
        return self.running_phase if self.state in ("I", "W") else self.selected_phase

    def _edit_phase(self) -> Phase:
        return self.phases[self._edit_phase_index()]

    # -- command handlers (return reply data after the prompt) ----------------------------
    def _cmd_ver(self, m: re.Match[str], name: str) -> str:
        return self.firmware_version

    def _cmd_dia_query(self, m: re.Match[str], name: str) -> str:
        return format_milli(self.diameter_milli)

    def _cmd_dia_set(self, m: re.Match[str], name: str) -> str:
        value, refusal = self._idle_setting(m.group(1))
        if value is None:
            return refusal
        if not self.profile.diameter_min_milli <= value <= self.profile.diameter_max_milli:
            return ERR_OUT_OF_RANGE
        self.diameter_milli = value
        self.volume_units = self._units_for_diameter(value)
        return ""

    def _cmd_rat_query(self, m: re.Match[str], name: str) -> str:
        phase = self._edit_phase()
        return format_milli(phase.rate_milli) + phase.rate_units

    def _cmd_rat_set(self, m: re.Match[str], name: str) -> str:
        value = parse_milli(m.group(1))
        if value is None:
            return ERR_UNKNOWN
        phase = self._edit_phase()
        units = m.group(2) or phase.rate_units
        if self.state == "X":
            return ERR_NOT_APPLICABLE
        if self.state in ("I", "W") and units != phase.rate_units:
            return ERR_NOT_APPLICABLE
        rate_nl_per_h = value * RATE_UNIT_NL_PER_H_PER_MILLI[units]
        if not self._rate_in_envelope(rate_nl_per_h):
            return ERR_OUT_OF_RANGE
        index = self._edit_phase_index()
        if self.state in ("I", "W"):
            # A change while pumping is volatile: power loss restores the stored rate.
            self._stored_rates.setdefault(index, phase.rate_milli)
            self._running_rate_nl_per_h = rate_nl_per_h
            self.mechanics.set_motion(rate_nl_per_h, self.mechanics.direction)
        else:
            self._stored_rates.pop(index, None)
        phase.rate_milli, phase.rate_units = value, units
        return ""

    def _cmd_vol_query(self, m: re.Match[str], name: str) -> str:
        return format_milli(self._edit_phase().volume_milli) + self.volume_units

    def _cmd_vol_set(self, m: re.Match[str], name: str) -> str:
        value, refusal = self._idle_setting(m.group(1))
        if value is None:
            return refusal
        self.phases[self.selected_phase].volume_milli = value
        return ""

    def _cmd_vol_units(self, m: re.Match[str], name: str) -> str:
        if self._pumping:
            return ERR_NOT_APPLICABLE
        self.volume_units = m.group(1)
        return ""

    def _cmd_dir_query(self, m: re.Match[str], name: str) -> str:
        return self._edit_phase().direction

    def _cmd_dir_set(self, m: re.Match[str], name: str) -> str:
        word = m.group(1)
        phase = self._edit_phase()
        if word == "STK":
            if self._pumping:
                return ERR_NOT_APPLICABLE
            self.sticky_direction = True
            return ""
        if self.state == "X":
            return ERR_NOT_APPLICABLE
        if self.state in ("I", "W") and phase.volume_milli != 0:
            return ERR_NOT_APPLICABLE
        if word == "REV":
            word = "WDR" if phase.direction == "INF" else "INF"
        phase.direction = word
        if self.state in ("I", "W"):
            self._start_phase_motion()
        return ""

    def _cmd_run(self, m: re.Match[str], name: str) -> str:
        if self.state in ("I", "W", "X", "T"):
            return ""
        if m.lastindex:
            index = int(m.group(1)) - 1
            if not 0 <= index < self.profile.phase_count:
                return ERR_OUT_OF_RANGE
            self._loop_counts.clear()
            self._enter_phase(index)
        elif self.state == "P" and self.phases[self.running_phase].function in PUMPING_FUNCTIONS:
            target = self._phase_target_scaled()
            if target and self._phase_moved_scaled >= target:
                self._phase_complete()  # its volume (changed while paused) is already dispensed
            else:
                self._start_phase_motion()  # resume the paused phase where it stopped
        elif self.state == "P":
            self._enter_phase(self.running_phase)
        else:
            self._enter_phase(0)
        return ""

    def _cmd_purge(self, m: re.Match[str], name: str) -> str:
        if self._pumping:
            return ERR_NOT_APPLICABLE
        _, high = rate_envelope_nl_per_h(self.diameter_milli / 1000, self.profile)
        self.state = "X"
        self.mechanics.set_motion(int(high), INFUSE)
        self._motion_since_ns = self.mechanics.time_ns
        return ""

    def _cmd_stop(self, m: re.Match[str], name: str) -> str:
        if self.state in ("I", "W", "T"):
            self.mechanics.stop()
            self._motion_since_ns = None
            self._pause_deadline_ns = None
            self.state = "P"
        elif self.state in ("P", "X"):
            self._stop_program()
        return ""

    def _cmd_dispensed(self, m: re.Match[str], name: str) -> str:
        inf_nl, wdr_nl = self.dispensed_nl()
        per = VOLUME_UNIT_NL_PER_MILLI[self.volume_units]
        return f"I{format_milli(inf_nl // per)}W{format_milli(wdr_nl // per)}{self.volume_units}"

    def _cmd_clear(self, m: re.Match[str], name: str) -> str:
        if m.group(1) == "INF":
            self._counter_offsets_scaled[0] = self.mechanics.infused_scaled
        else:
            self._counter_offsets_scaled[1] = self.mechanics.withdrawn_scaled
        return ""

    def _cmd_saf_query(self, m: re.Match[str], name: str) -> str:
        return str(self.safe_timeout_s)

    def _cmd_saf_set(self, m: re.Match[str], name: str) -> str:
        value = int(m.group(1))
        self.safe_timeout_s = value
        self._last_valid_ns = self.mechanics.time_ns if value else None
        return ""

    def _cmd_phn_query(self, m: re.Match[str], name: str) -> str:
        running = self.state in ("I", "W", "T", "P")
        return str((self.running_phase if running else self.selected_phase) + 1)

    def _cmd_phn_set(self, m: re.Match[str], name: str) -> str:
        value = int(m.group(1))
        if self._pumping:
            return ERR_NOT_APPLICABLE
        if not 1 <= value <= self.profile.phase_count:
            return ERR_OUT_OF_RANGE
        self.selected_phase = value - 1
        return ""

    def _cmd_fun_query(self, m: re.Match[str], name: str) -> str:
        return self.phases[self.selected_phase].function_text

    def _cmd_fun_set(self, m: re.Match[str], name: str) -> str:
        function, argument = m.group(1), m.group(2)
        allowed = FUNCTION_ARGUMENTS.get(function)
        if (allowed is None) != (argument is None):
            return ERR_UNKNOWN
        value = 0 if argument is None else int(argument)
        if allowed is not None and (value not in allowed
                                    or function in ("JMP", "IF", "EVN") and value > self.profile.phase_count):
            return ERR_OUT_OF_RANGE
        if self.state not in ("S", "P"):
            return ERR_NOT_APPLICABLE
        phase = self.phases[self.selected_phase]
        phase.function, phase.argument = function, value
        return ""

    def _cmd_locp_query(self, m: re.Match[str], name: str) -> str:
        return str(self.flags["LOCP"])

    def _cmd_locp_set(self, m: re.Match[str], name: str) -> str:
        self.flags["LOCP"] = int(m.group(1))
        return ""

    def _cmd_in_query(self, m: re.Match[str], name: str) -> str:
        pin = int(m.group(1))
        return str(self.ttl_inputs[pin]) if pin in self.ttl_inputs else ERR_OUT_OF_RANGE

    def _cmd_out_query(self, m: re.Match[str], name: str) -> str:
        return str(self.ttl_output) if int(m.group(1)) == TTL_OUTPUT_PIN else ERR_OUT_OF_RANGE

    def _cmd_out_set(self, m: re.Match[str], name: str) -> str:
        if int(m.group(1)) != TTL_OUTPUT_PIN:
            return ERR_OUT_OF_RANGE
        self.ttl_output = int(m.group(2))
        return ""

    def _cmd_flag_query(self, m: re.Match[str], name: str) -> str:
        return str(self.flags[name])

    def _cmd_flag_set(self, m: re.Match[str], name: str) -> str:
        self.flags[name] = int(m.group(1))
        return ""

    def _cmd_buz_query(self, m: re.Match[str], name: str) -> str:
        return str(self.buzzer[0])

    def _cmd_buz_set(self, m: re.Match[str], name: str) -> str:
        self.buzzer = (int(m.group(1)), int(m.group(2) or 0))
        return ""

    def _cmd_trg_query(self, m: re.Match[str], name: str) -> str:
        return self.trigger_mode

    def _cmd_trg_set(self, m: re.Match[str], name: str) -> str:
        self.trigger_mode = m.group(1)
        return ""

    def _cmd_adr_query(self, m: re.Match[str], name: str) -> str:
        return f"{self.address}"

    def _cmd_adr_set(self, m: re.Match[str], name: str) -> str:
        address = int(m.group(1))
        baud = None if m.group(2) is None else int(m.group(2))
        if baud is not None and baud not in self.profile.baud_rates:
            return ERR_OUT_OF_RANGE
        self.address = address
        if baud is not None and baud != self.baud:
            self.baud = baud
            self._last_valid_ns = None
        self.adr_mode = m.group(3) or ""
        return ""

    def _cmd_reset(self, m: re.Match[str], name: str) -> str:
        self._stop_program()
        self.phases = _default_phases(self.profile.phase_count)
        self._stored_rates.clear()
        self.selected_phase = 0
        self.safe_timeout_s = 0
        self._last_valid_ns = None
        self.address = 0
        return ""
