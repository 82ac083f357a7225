"""A Mettler Toledo Excellence Plus XPE205 speaking MT-SICS, byte for byte, over the byte-device protocol.

The model declares MT-SICS levels 0 and 1 in ``I1`` (``"01"``) and implements
every command of both, plus four level-2 commands; ``I0`` lists exactly these
(source of every reply: *MT-SICS Reference Manual, Excellence balances*,
Mettler Toledo 11780711; golden vectors in ``tests/balance/test_mtsics_golden.py``):

========== =====================================================================
level 0
``@``      reset: cancels every pending command, ``SIR``/``SR``, the tare, the
           display text and the key mode; answers ``I4 A "<serial>"``
``I0``     ``I0 B <level> "<command>"`` for each command, the last one ``I0 A ...``
``I1``     ``I1 A "01" "2.20" "2.20" "1.00" ""`` (levels, then the version of each level)
``I2``     ``I2 A "XPE205 Excellence Plus 220.00000 g"`` (type, line, capacity)
``I3``     ``I3 A "<software> <type definition>"``; ``I4`` serial; ``I5`` software material number
``S``      waits for a stable weight up to ``stability_timeout_s``: ``S S <w> <u>``,
           else ``S I``; ``S +``/``S -`` out of range
``SI``     ``S S``/``S D`` at once; ``SIR`` repeats it every ``stream_interval_s``
           until ``@`` or another command
``Z``      waits for stability: ``Z A``, else ``Z I``; ``Z +``/``Z -`` out of range
``ZI``     zeroes at once: ``ZI S`` (stable) or ``ZI D`` (dynamic)
level 1
``D``      ``D "text"``: ``D A``; longer than the display (``display_width``): ``D R``;
           unquoted: ``D L``
``DW``     weight display back: ``DW A``
``K``      ``K 1``..``K 4`` key mode: ``K A``; others ``K L`` (the simulator has no keys to press)
``SR``     ``SR [<preset> <unit>]``: a stable weight as ``S``, then ``S D`` once the weight
           moved by the preset (default 12.5 % of the last value, at least 30 digits)
           and ``S S`` when it is stable again, until ``@`` or another command; bad preset ``S L``
``T``      waits for stability: ``T S <tare> <u>``, else ``T I``; ``TI``: ``TI S``/``TI D`` at once
``TA``     ``TA A <tare> <u>``; ``TA <value> <unit>`` presets the tare (rounded to the
           readability): ``TA A <tare> <u>``; negative, above capacity or unknown unit: ``TA L``
``TAC``    clears the tare: ``TAC A``
level 2 (part)
``I10``    ``I10 A "<balance ID>"``; ``I10 "<ID>"`` sets it (at most 20 characters, else ``I10 L``): ``I10 A``
``I11``    ``I11 A "XPE205"``
``M28``    ``M28 A 1 <°C>``: the one temperature sensor
``WS``     ``WS A <door>`` (0 closed, 1 right open, 2 left open); ``WS 0|1|2`` moves the
           doors (the pan settles again): ``WS A``; others ``WS L``
========== =====================================================================

Anything else, lower-case commands included, answers ``ES``; parameters given
to a command that takes none answer ``ES``; a line too long to be a command
answers ``ET``. While ``S``, ``Z``, ``T`` or the first ``SR`` reading waits for
stability, later commands queue and are answered in order, as the balance
executes one command at a time; ``@`` cancels them. Catching up after a jump
of virtual time, a stream sends at most :data:`MAX_CATCH_UP_READINGS` readings.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from cython_ext.errors import ConfigError
from hal.balance import parse_mass_ug
from hal.clock import NS_PER_S
from hal.mtsics import codec
from hal.mtsics.codec import GeneralError, ReplyStatus
from sim.balance.pan import Pan, PanReading, PeriodicSchedule, display_decimals
from sim.device import ByteDevice

#: Most stream readings emitted by one poll after virtual time jumped ahead.
MAX_CATCH_UP_READINGS = 50
#: Commands implemented, in ``I0`` order, with their MT-SICS level.
IMPLEMENTED_COMMANDS: tuple[tuple[int, str], ...] = (
    (0, "I0"), (0, "I1"), (0, "I2"), (0, "I3"), (0, "I4"), (0, "I5"),
    (0, "S"), (0, "SI"), (0, "SIR"), (0, "Z"), (0, "ZI"), (0, "@"),
    (1, "D"), (1, "DW"), (1, "K"), (1, "SR"), (1, "T"), (1, "TA"), (1, "TAC"), (1, "TI"),
    (2, "I10"), (2, "I11"), (2, "M28"), (2, "WS"),
)  # fmt: skip
#: ``I1``: the levels implemented in full, then the version of levels 0 to 3.
LEVELS = ("01", "2.20", "2.20", "1.00", "")
#: Key modes of ``K``.
KEY_MODES = ("1", "2", "3", "4")
#: Door positions ``WS`` can set.
DOOR_POSITIONS = ("0", "1", "2")
#: Longest balance ID of ``I10``, characters.
MAX_BALANCE_ID = 20
#: ``SR`` default: the weight must move by this share of the last value sent...
SR_DEFAULT_SHARE = 0.125
#: ...and by at least this many display digits.
SR_MIN_DIGITS = 30


class MtSicsBalance(ByteDevice):
    """Simulated MT-SICS balance (an XPE205 by default).

    :param pan: the weighing pan (physics, noise, stability).
    :param model: type, reported by ``I11`` and first in ``I2``.
    :param product_line: product line, second in ``I2``.
    :param capacity_text: capacity and unit, last in ``I2``.
    :param serial_number: reported by ``I4`` and ``@``.
    :param firmware: software version, first in ``I3``.
    :param type_definition: type definition number, second in ``I3``.
    :param software_id: software material number, ``I5``.
    :param balance_id: initial ``I10`` balance ID.
    :param unit: display unit (``"g"`` or ``"mg"``).
    :param stream_interval_s: interval of ``SIR`` readings, s (> 0).
    :param field_width: width of the right-aligned weight field, characters.
    :param stability_timeout_s: how long ``S``, ``Z`` and ``T`` wait for stability, s (> 0).
    :param display_width: characters the display shows for ``D``.
    """

    def __init__(
        self,
        pan: Pan,
        *,
        model: str = "XPE205",
        product_line: str = "Excellence Plus",
        capacity_text: str = "220.00000 g",
        serial_number: str = "B123456789",
        firmware: str = "2.20",
        type_definition: str = "10.28.0.493.142",
        software_id: str = "11671158C",
        balance_id: str = "Balance 1",
        unit: str = "g",
        stream_interval_s: float = 0.1,
        field_width: int = 10,
        stability_timeout_s: float = 10.0,
        display_width: int = 20,
    ) -> None:
        decimals = display_decimals(unit, pan.settings.resolution_ug)
        for name, seconds in (("stream_interval_s", stream_interval_s), ("stability_timeout_s", stability_timeout_s)):
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
                raise ConfigError(name, seconds, "a finite number > 0 s")
        texts = {
            "model": model, "product_line": product_line, "capacity_text": capacity_text,
            "serial_number": serial_number, "firmware": firmware, "type_definition": type_definition,
            "software_id": software_id,
        }  # fmt: skip
        for name, text in texts.items():
            if not isinstance(text, str) or not text.isprintable() or '"' in text or not 0 < len(text) <= 40:
                raise ConfigError(name, text, "printable text without double quotes, 1-40 characters")
        if not _valid_balance_id(balance_id):
            raise ConfigError("balance_id", balance_id, f"printable text without double quotes, at most {MAX_BALANCE_ID}")
        if isinstance(field_width, bool) or not isinstance(field_width, int) or not 0 <= field_width <= 20:
            raise ConfigError("field_width", field_width, "an integer in [0, 20] characters")
        if isinstance(display_width, bool) or not isinstance(display_width, int) or not 1 <= display_width <= 64:
            raise ConfigError("display_width", display_width, "an integer in [1, 64] characters")
        self.pan = pan
        self.model = model
        self.product_line = product_line
        self.capacity_text = capacity_text
        self.serial_number = serial_number
        self.firmware = firmware
        self.type_definition = type_definition
        self.software_id = software_id
        self.balance_id = balance_id
        self.unit = unit
        self.decimals = decimals
        self.field_width = field_width
        self.display_width = display_width
        self._stability_timeout_ns = round(stability_timeout_s * NS_PER_S)
        self._stream = PeriodicSchedule(pan.clock, round(stream_interval_s * NS_PER_S), MAX_CATCH_UP_READINGS)
        self._deframer = codec.LineDeframer()
        self._lock = threading.Lock()
        #: Text shown by ``D``, or None while the display shows the weight.
        self.display_text: str | None = None
        #: Key mode set by ``K``.
        self.key_mode = "1"
        #: Door position (``WS``).
        self.door = "0"
        # A command waiting for stability: (action on a stable reading, its reply ID, deadline).
        self._waiting: tuple[Callable[[PanReading], bytes], str, int] | None = None
        self._queued: deque[bytes] = deque()
        self._send_on_change: _SendOnChange | None = None

    @property
    def streaming(self) -> bool:
        """True while ``SIR`` or ``SR`` sends on its own."""
        return self._stream.active or self._send_on_change is not None

    @property
    def waiting(self) -> bool:
        """True while a command waits for a stable weight."""
        return self._waiting is not None

    def receive(self, data: bytes) -> bytes:
        """Answer every complete command in ``data`` (partial commands wait for more bytes)."""
        with self._lock:
            out = bytearray()
            for line in self._deframer.feed(data):
                if line.strip() == codec.RESET.encode():
                    out += self._reset()
                elif self._waiting is not None or self._queued:
                    self._queued.append(line)
                else:
                    out += self._answer(line)
            return bytes(out)

    def poll(self) -> bytes:
        """Replies to commands whose wait ended, and ``SIR``/``SR`` lines that are due now."""
        with self._lock:
            out = bytearray(self._settle_waiting())
            out += b"".join(self._weight_reply(self.pan.read(), immediate=True) for _ in range(self._stream.take_due()))
            if self._send_on_change is not None:
                out += self._send_on_change.poll(self)
            return bytes(out)

    def next_poll_ns(self) -> int | None:
        """When a waiting command times out or the next ``SIR`` line falls due, ns, or None."""
        times = [t for t in (self._stream.next_ns, self._waiting[2] if self._waiting else None) if t is not None]
        return min(times) if times else None

    # --- replies -----------------------------------------------------------------
    def _weight_reply(self, reading: PanReading, *, immediate: bool) -> bytes:
        if reading.overload or reading.underload:
            return self._range_reply(codec.WEIGHT_REPLY_ID, reading)
        if not immediate and not reading.stable:
            return codec.encode_status_reply(codec.WEIGHT_REPLY_ID, ReplyStatus.NOT_EXECUTABLE)
        return self._encode_weight(codec.WEIGHT_REPLY_ID, reading.net_ug, reading.stable)

    @staticmethod
    def _range_reply(command: str, reading: PanReading) -> bytes:
        return codec.encode_status_reply(command, ReplyStatus.OVERLOAD if reading.overload else ReplyStatus.UNDERLOAD)

    def _encode_weight(self, command: str, mass_ug: int, stable: bool, status: ReplyStatus | None = None) -> bytes:
        if status is None:
            return codec.encode_weight_reply(
                command, stable=stable, mass_ug=mass_ug, unit=self.unit, decimals=self.decimals, width=self.field_width
            )
        value = codec.format_mass(mass_ug, self.unit, self.decimals).rjust(self.field_width)
        return codec.encode_fields_reply(command, value, self.unit)

    # --- command dispatch --------------------------------------------------------
    def _answer(self, line: bytes) -> bytes:
        if len(line) > codec.MAX_LINE_BYTES:
            return codec.encode_error_reply(GeneralError.TRANSMISSION)
        decoded = codec.decode_command(line)
        if isinstance(decoded, codec.MalformedLine):
            if decoded.reason == "empty command line":
                return b""
            return codec.encode_error_reply(GeneralError.SYNTAX)
        command, params = decoded
        if command != codec.REPEAT_IMMEDIATE:
            self._stream.stop()  # any other command ends SIR...
        self._send_on_change = None  # ...and SR
        handler = self._NO_PARAMS.get(command)
        if handler is not None:
            return codec.encode_error_reply(GeneralError.SYNTAX) if params else handler(self)
        handler_with = self._WITH_PARAMS.get(command)
        if handler_with is None:
            return codec.encode_error_reply(GeneralError.SYNTAX)
        return handler_with(self, params)

    def _wait_for_stability(self, reply_id: str, action: Callable[[PanReading], bytes]) -> bytes:
        """Run ``action`` on a stable reading now, or park it until stable or the timeout."""
        reading = self.pan.read()
        if reading.overload or reading.underload:
            return self._range_reply(reply_id, reading)
        if reading.stable:
            return action(reading)
        self._waiting = (action, reply_id, self.pan.clock.monotonic_ns() + self._stability_timeout_ns)
        return b""

    def _settle_waiting(self) -> bytes:
        out = bytearray()
        while self._waiting is not None:
            action, reply_id, deadline_ns = self._waiting
            reading = self.pan.read()
            if reading.overload or reading.underload:
                out += self._range_reply(reply_id, reading)
            elif reading.stable:
                out += action(reading)
            elif self.pan.clock.monotonic_ns() >= deadline_ns:
                out += codec.encode_status_reply(reply_id, ReplyStatus.NOT_EXECUTABLE)
                if reply_id == codec.WEIGHT_REPLY_ID:
                    self._send_on_change = None  # an SR whose first weight never settled ends
            else:
                break
            self._waiting = None
            while self._queued and self._waiting is None:
                out += self._answer(self._queued.popleft())
        return bytes(out)

    def _reset(self) -> bytes:
        self._waiting = None
        self._queued.clear()
        self._stream.stop()
        self._send_on_change = None
        self.pan.clear_tare()
        self.display_text = None
        self.key_mode = "1"
        return codec.encode_info_reply(codec.INFO_SERIAL, self.serial_number)

    # --- level 0 -------------------------------------------------------------------
    def _cmd_stable(self) -> bytes:
        return self._wait_for_stability(codec.WEIGHT_REPLY_ID, lambda r: self._encode_weight("S", r.net_ug, True))

    def _cmd_immediate(self) -> bytes:
        return self._weight_reply(self.pan.read(), immediate=True)

    def _cmd_repeat(self) -> bytes:
        self._stream.start()
        return self._weight_reply(self.pan.read(), immediate=True)

    def _cmd_zero(self) -> bytes:
        def zero(reading: PanReading) -> bytes:
            self.pan.zero()
            return codec.encode_status_reply(codec.ZERO, ReplyStatus.EXECUTED)

        return self._wait_for_stability(codec.ZERO, zero)

    def _cmd_zero_immediate(self) -> bytes:
        reading = self.pan.read()
        if reading.overload or reading.underload:
            return self._range_reply(codec.ZERO_IMMEDIATE, reading)
        self.pan.zero()
        status = ReplyStatus.STABLE if reading.stable else ReplyStatus.DYNAMIC
        return codec.encode_status_reply(codec.ZERO_IMMEDIATE, status)

    def _cmd_info_commands(self) -> bytes:
        last = len(IMPLEMENTED_COMMANDS) - 1
        return b"".join(
            codec.encode_fields_reply(codec.INFO_COMMANDS, str(level), codec.quote(name), more=index < last)
            for index, (level, name) in enumerate(IMPLEMENTED_COMMANDS)
        )

    def _cmd_levels(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_LEVELS, *LEVELS)

    def _cmd_model(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_MODEL, f"{self.model} {self.product_line} {self.capacity_text}")

    def _cmd_software(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_SOFTWARE, f"{self.firmware} {self.type_definition}")

    def _cmd_serial(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_SERIAL, self.serial_number)

    def _cmd_software_id(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_SOFTWARE_ID, self.software_id)

    # --- level 1 -------------------------------------------------------------------
    def _cmd_display_text(self, params: tuple[str, ...]) -> bytes:
        if not params:
            return codec.encode_error_reply(GeneralError.SYNTAX)
        if len(params) != 1 or not _is_quoted(params[0]):
            return codec.encode_status_reply(codec.DISPLAY_TEXT, ReplyStatus.LOGIC)
        text = params[0][1:-1]
        self.display_text = text[: self.display_width]
        status = ReplyStatus.TRUNCATED if len(text) > self.display_width else ReplyStatus.EXECUTED
        return codec.encode_status_reply(codec.DISPLAY_TEXT, status)

    def _cmd_display_weight(self) -> bytes:
        self.display_text = None
        return codec.encode_status_reply(codec.DISPLAY_WEIGHT, ReplyStatus.EXECUTED)

    def _cmd_keys(self, params: tuple[str, ...]) -> bytes:
        if not params:
            return codec.encode_error_reply(GeneralError.SYNTAX)
        if len(params) != 1 or params[0] not in KEY_MODES:
            return codec.encode_status_reply(codec.KEYS, ReplyStatus.LOGIC)
        self.key_mode = params[0]
        return codec.encode_status_reply(codec.KEYS, ReplyStatus.EXECUTED)

    def _cmd_send_on_change(self, params: tuple[str, ...]) -> bytes:
        preset_ug: int | None = None
        if params:
            preset_ug = self._mass_param(params)
            if preset_ug is None or preset_ug <= 0:
                return codec.encode_status_reply(codec.WEIGHT_REPLY_ID, ReplyStatus.LOGIC)
        watcher = _SendOnChange(preset_ug)

        def first(reading: PanReading) -> bytes:
            self._send_on_change = watcher
            return watcher.send_stable(self, reading)

        return self._wait_for_stability(codec.WEIGHT_REPLY_ID, first)

    def _cmd_tare(self) -> bytes:
        return self._wait_for_stability(codec.TARE, lambda r: self._encode_weight(codec.TARE, self.pan.tare(), True))

    def _cmd_tare_immediate(self) -> bytes:
        reading = self.pan.read()
        if reading.overload or reading.underload:
            return self._range_reply(codec.TARE_IMMEDIATE, reading)
        return self._encode_weight(codec.TARE_IMMEDIATE, self.pan.tare(), reading.stable)

    def _cmd_tare_preset(self, params: tuple[str, ...]) -> bytes:
        if params:
            tare_ug = self._mass_param(params)
            if tare_ug is None or not 0 <= tare_ug <= self.pan.settings.capacity_ug:
                return codec.encode_status_reply(codec.TARE_PRESET, ReplyStatus.LOGIC)
            resolution = self.pan.settings.resolution_ug
            self.pan.preset_tare(round(tare_ug / resolution) * resolution)
        return self._encode_weight(codec.TARE_PRESET, self.pan.tare_ug, True, ReplyStatus.EXECUTED)

    def _cmd_tare_clear(self) -> bytes:
        self.pan.clear_tare()
        return codec.encode_status_reply(codec.TARE_CLEAR, ReplyStatus.EXECUTED)

    # --- level 2 (part) ----------------------------------------------------------------
    def _cmd_balance_id(self, params: tuple[str, ...]) -> bytes:
        if not params:
            return codec.encode_info_reply(codec.INFO_BALANCE_ID, self.balance_id)
        if len(params) != 1 or not _is_quoted(params[0]) or not _valid_balance_id(params[0][1:-1]):
            return codec.encode_status_reply(codec.INFO_BALANCE_ID, ReplyStatus.LOGIC)
        self.balance_id = params[0][1:-1]
        return codec.encode_status_reply(codec.INFO_BALANCE_ID, ReplyStatus.EXECUTED)

    def _cmd_type(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_TYPE, self.model)

    def _cmd_temperature(self) -> bytes:
        return codec.encode_fields_reply(codec.TEMPERATURE, "1", f"{self.pan.settings.temperature_c:.1f}")

    def _cmd_doors(self, params: tuple[str, ...]) -> bytes:
        if not params:
            return codec.encode_fields_reply(codec.DOORS, self.door)
        if len(params) != 1 or params[0] not in DOOR_POSITIONS:
            return codec.encode_status_reply(codec.DOORS, ReplyStatus.LOGIC)
        if params[0] != self.door:
            self.door = params[0]
            self.pan.disturb(self.pan.settings.settling_s)  # moving doors shake the draft shield
        return codec.encode_status_reply(codec.DOORS, ReplyStatus.EXECUTED)

    def _mass_param(self, params: tuple[str, ...]) -> int | None:
        """A ``<value> <unit>`` parameter pair in µg (exact), or None when it is not one."""
        if len(params) != 2 or params[1] in ("ug", "µg"):
            return None
        parsed = parse_mass_ug(params[0], params[1])
        return None if isinstance(parsed, str) else parsed[0]

    _NO_PARAMS: dict[str, Callable[[MtSicsBalance], bytes]] = {
        codec.STABLE_WEIGHT: _cmd_stable,
        codec.IMMEDIATE_WEIGHT: _cmd_immediate,
        codec.REPEAT_IMMEDIATE: _cmd_repeat,
        codec.ZERO: _cmd_zero,
        codec.ZERO_IMMEDIATE: _cmd_zero_immediate,
        codec.TARE: _cmd_tare,
        codec.TARE_IMMEDIATE: _cmd_tare_immediate,
        codec.TARE_CLEAR: _cmd_tare_clear,
        codec.INFO_COMMANDS: _cmd_info_commands,
        codec.INFO_LEVELS: _cmd_levels,
        codec.INFO_MODEL: _cmd_model,
        codec.INFO_SOFTWARE: _cmd_software,
        codec.INFO_SERIAL: _cmd_serial,
        codec.INFO_SOFTWARE_ID: _cmd_software_id,
        codec.INFO_TYPE: _cmd_type,
        codec.DISPLAY_WEIGHT: _cmd_display_weight,
        codec.TEMPERATURE: _cmd_temperature,
    }
    _WITH_PARAMS: dict[str, Callable[[MtSicsBalance, tuple[str, ...]], bytes]] = {
        codec.DISPLAY_TEXT: _cmd_display_text,
        codec.KEYS: _cmd_keys,
        codec.SEND_ON_CHANGE: _cmd_send_on_change,
        codec.TARE_PRESET: _cmd_tare_preset,
        codec.INFO_BALANCE_ID: _cmd_balance_id,
        codec.DOORS: _cmd_doors,
    }


class _SendOnChange:
    """The ``SR`` watcher: after a stable value, ``S D`` once the weight moved by the preset, then ``S S`` when stable."""

    def __init__(self, preset_ug: int | None) -> None:
        self.preset_ug = preset_ug
        self.last_ug = 0
        self.moving = False

    def send_stable(self, balance: MtSicsBalance, reading: PanReading) -> bytes:
        self.last_ug = reading.net_ug
        self.moving = False
        return balance._encode_weight(codec.WEIGHT_REPLY_ID, reading.net_ug, True)

    def threshold_ug(self, balance: MtSicsBalance) -> int:
        if self.preset_ug is not None:
            return self.preset_ug
        return max(math.ceil(abs(self.last_ug) * SR_DEFAULT_SHARE), SR_MIN_DIGITS * balance.pan.settings.resolution_ug)

    def poll(self, balance: MtSicsBalance) -> bytes:
        reading = balance.pan.read()
        if reading.overload or reading.underload:
            if self.moving:
                return b""
            self.moving = True
            return balance._range_reply(codec.WEIGHT_REPLY_ID, reading)
        if self.moving:
            return self.send_stable(balance, reading) if reading.stable else b""
        if abs(reading.net_ug - self.last_ug) >= self.threshold_ug(balance):
            self.moving = True
            return balance._encode_weight(codec.WEIGHT_REPLY_ID, reading.net_ug, False)
        return b""


def _is_quoted(param: str) -> bool:
    return len(param) >= 2 and param[0] == param[-1] == '"'


def _valid_balance_id(text: object) -> bool:
    return isinstance(text, str) and text.isprintable() and '"' not in text and len(text) <= MAX_BALANCE_ID
