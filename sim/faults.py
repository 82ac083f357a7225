"""Seeded, scriptable wire and device faults for simulated devices.

A :class:`FaultyDevice` sits between an endpoint and a device and implements
the same byte-device protocol. Faults are described by spec strings (the
``--fault SPEC`` option of ``itb sim serve``)::

    KIND[:KEY=VALUE[,KEY=VALUE]...]

Kinds (``dir`` is ``rx``, host to device, or ``tx``, device to host; default ``tx``):

=================  =====================================================================
``drop``           drop bytes (``p`` per byte, or the whole reply of a triggered command)
``dup``            send bytes twice (``p`` per byte, or a triggered reply)
``corrupt``        flip one bit (``p`` per byte, or one byte of a triggered reply)
``junk``           send ``bytes=N`` random bytes before a triggered reply (default 3)
``delay``          hold a triggered reply back ``s=SECONDS`` (device clock; default 1)
``split``          send a triggered reply in two, the rest ``s=SECONDS`` later (default 0.05),
                   cut after ``at_byte=N`` (default: half)
``gap``            with probability ``p`` per byte after the first of a chunk, pause the line
                   ``s=SECONDS`` (default 0.6) before it: the rest follows late, and may
                   pause again (``dir=rx`` exercises the pump's 0.5 s inter-byte rule)
``lost-reply``     the command executes, its reply is lost
``disconnect``     the port vanishes (pty master or socket closed)
``stall``          the motor stalls (``A?S``)
``seize``          the motor seizes silently: ``RUN`` is taken and ``I`` reported, nothing moves;
                   ``clear=SECONDS`` later it frees (default: never). A pump that fails to restart
                   after an MRI (SAFE-05)
``occlusion``      the outlet blocks; ``clear=SECONDS`` later it clears (default: never)
``power-cycle``    power is lost, and restored ``off=SECONDS`` later (default 0)
``drift``          the device clock runs ``ppm=N`` fast (slow if negative); applied by
                   :func:`sim.rig.simulated_pump` when the device is built
=================  =====================================================================

Triggers (any kind except ``drift``):

* ``at=SECONDS``: once, when the device clock is that far past the start;
* ``after=N`` (with optional ``match=REGEX``, searched in the normalised command
  text such as ``0RUN``): on the Nth matching command, and on the next
  ``count-1`` ones (``count`` defaults to 1);
* ``p=PROB`` (``drop``, ``dup``, ``corrupt``, ``gap`` only): every byte in direction
  ``dir``, with probability PROB, from a generator seeded by ``seed``.

Without a trigger, command faults fire on the first command (``after=1``).
Wire faults that need a command (``lost-reply``, ``delay``, ``split``,
``junk``) take ``after``/``match`` only.

Faults can also be added while running with :meth:`FaultyDevice.add`.

Every value is a plain decimal within :data:`NUMBER_KEYS` (times up to ten years of
device time, ``s`` up to a day, ``after`` and ``count`` up to 10**9, ``bytes`` and
``at_byte`` up to 4096; whole numbers where a count is meant), a spec is at most
:data:`MAX_SPEC_CHARS` characters and a ``match`` at most :data:`MAX_MATCH_CHARS`.
So a spec is parsed and bounded before any device thread sees it.

Examples: ``lost-reply:match=RUN``, ``corrupt:p=0.001``, ``stall:at=120``,
``power-cycle:at=60,off=5``, ``disconnect:after=10``, ``delay:s=2,match=DIS,count=3``.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from hal.clock import NS_PER_S, Clock
from cython_ext import fields
from cython_ext.errors import ConfigError
from hal.newera.framing import Frame
from sim.device import ByteDevice
from sim.newera.deframer import PumpDeframer
from sim.newera.firmware import normalise

DEVICE_KINDS = ("stall", "occlusion", "power-cycle", "disconnect", "seize")
REPLY_KINDS = ("drop", "dup", "corrupt", "junk", "delay", "split", "lost-reply")
KINDS = (*REPLY_KINDS, *DEVICE_KINDS, "gap", "drift")
_PROBABILISTIC = ("drop", "dup", "corrupt", "gap")

_ALLOWED_KEYS: dict[str, set[str]] = {
    "drop": {"p", "dir"},
    "dup": {"p", "dir"},
    "corrupt": {"p", "dir"},
    "junk": {"bytes"},
    "delay": {"s"},
    "split": {"s", "at_byte"},
    "lost-reply": set(),
    "disconnect": set(),
    "stall": set(),
    "seize": {"clear"},
    "occlusion": {"clear"},
    "power-cycle": {"off"},
    "drift": {"ppm"},
    "gap": {"p", "dir", "s"},
}
_TRIGGER_KEYS = {"at", "after", "match", "count"}


@dataclass(frozen=True)
class FaultSpec:
    """One parsed fault.

    :ivar kind: one of :data:`KINDS`.
    :ivar params: kind-specific parameters (strings as written).
    :ivar at_s: fire once at this device time after start, s (or None).
    :ivar after: fire on the Nth matching command (or None).
    :ivar match: regex searched in the normalised command text (None: any command).
    :ivar count: how many consecutive matching commands fire (with ``after``).
    :ivar probability: per-byte probability for ``drop``/``dup``/``corrupt`` (or None).
    :ivar text: the spec string it came from.
    """

    kind: str
    params: dict[str, str] = field(default_factory=dict)
    at_s: float | None = None
    after: int | None = None
    match: str | None = None
    count: int = 1
    probability: float | None = None
    text: str = ""

    @property
    def direction(self) -> str:
        """``rx`` or ``tx``."""
        return self.params.get("dir", "tx")


#: Longest fault spec, characters.
MAX_SPEC_CHARS = 256
#: Longest ``match=`` regular expression, characters.
MAX_MATCH_CHARS = 100
_TEN_YEARS_S = 3650 * 86_400
#: Every numeric key: (smallest, largest, whole number?). Times are seconds of device time.
NUMBER_KEYS: dict[str, tuple[int, int, bool]] = {
    "at": (0, _TEN_YEARS_S, False),
    "after": (1, 10**9, True),
    "count": (1, 10**9, True),
    "p": (0, 1, False),
    "s": (0, 86_400, False),
    "clear": (0, _TEN_YEARS_S, False),
    "off": (0, _TEN_YEARS_S, False),
    "bytes": (1, 4096, True),
    "at_byte": (1, 4096, True),
    "ppm": (-100_000, 100_000, False),
}


def _number(spec: str, key: str, value: str) -> float | int:
    """``value`` of ``key`` within :data:`NUMBER_KEYS`, as written (plain decimal, no rounding)."""
    low, high, whole = NUMBER_KEYS[key]
    name = f"fault {spec!r} {key}"
    if whole:
        if not (value.isascii() and value.isdigit()) or len(value) > 12:
            raise ConfigError(name, fields.shown(value), f"a whole number in [{low}, {high}]")
        return fields.integer(int(value), name, low, high)
    return float(fields.decimal_text(value, name, low, high))


def parse_fault(text: str) -> FaultSpec:
    """Parse a fault spec string, bounding every value before any device or thread sees it.

    :raises ConfigError: naming the bad part (kind, key or value) and its allowed range.
    """
    if not isinstance(text, str) or len(text) > MAX_SPEC_CHARS:
        raise ConfigError("fault", fields.shown(text), f"a fault spec of at most {MAX_SPEC_CHARS} characters")
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError("fault kind", fields.shown(kind), f"one of {', '.join(KINDS)}")
    params: dict[str, str] = {}
    if rest:
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"fault {text!r}", fields.shown(item), "KEY=VALUE")
            if key in params:
                raise ConfigError(f"fault {text!r}", fields.shown(key), "each key at most once")
            params[key] = value.strip()
    allowed = _ALLOWED_KEYS[kind] | (_TRIGGER_KEYS if kind != "drift" else set())
    for key in params:
        if key not in allowed:
            raise ConfigError(f"fault {text!r} key", fields.shown(key), f"one of {', '.join(sorted(allowed))}")
    numbers = {key: _number(text, key, value) for key, value in params.items() if key in NUMBER_KEYS}
    trig = {k: params.pop(k) for k in list(params) if k in _TRIGGER_KEYS | {"p"}}
    at_s = numbers.get("at")
    after = numbers.get("after")
    count = int(numbers.get("count", 1))
    probability = numbers.get("p")
    match = trig.get("match")
    if match is not None:
        if len(match) > MAX_MATCH_CHARS:
            raise ConfigError(f"fault {text!r} match", fields.shown(match),
                              f"a regular expression of at most {MAX_MATCH_CHARS} characters")
        try:
            re.compile(match)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ConfigError(f"fault {text!r} match", match, "a valid regular expression",
                              detail=str(exc)) from None
    if "dir" in params and params["dir"] not in ("rx", "tx"):
        raise ConfigError(f"fault {text!r} dir", params["dir"], "rx or tx")
    if kind == "drift" and "ppm" not in params:
        raise ConfigError(f"fault {text!r} ppm", None, "given (drift:ppm=N)")
    for key in ("bytes", "at_byte"):
        if key in params:
            params[key] = str(numbers[key])
    if probability is not None and (at_s is not None or after is not None):
        raise ConfigError(f"fault {text!r}", "p with at/after", "either p or a trigger, not both")
    if at_s is not None and after is not None:
        raise ConfigError(f"fault {text!r}", "at and after", "one trigger")
    if probability is not None and kind not in _PROBABILISTIC:
        raise ConfigError(f"fault {text!r} p", probability, f"only for {', '.join(_PROBABILISTIC)}")
    if kind in REPLY_KINDS and at_s is not None:
        raise ConfigError(f"fault {text!r} at", at_s, "after=N for reply faults (they act on a command's reply)")
    if kind == "gap" and probability is None:
        raise ConfigError(f"fault {text!r} p", None, "given (gap:p=PROB)")
    if kind != "drift" and probability is None and at_s is None and after is None:
        after = 1
    if "dir" in params and probability is None:
        raise ConfigError(f"fault {text!r} dir", params["dir"], "used only with p=")
    return FaultSpec(kind, params, at_s, None if after is None else int(after), match, count, probability, text)


@dataclass
class _Scheduled:
    time_ns: int
    action: str
    spec: FaultSpec


class FaultyDevice(ByteDevice):
    """Wraps a device and applies :class:`FaultSpec` faults to its traffic and state.

    Command faults are matched per packet: the wrapper feeds the device one
    byte at a time and tracks packet boundaries with its own deframer, so a
    reply is attributed to the command that caused it.

    :param device: the device to wrap (device faults need the :class:`~sim.newera.Ne1000` hooks).
    :param faults: parsed specs or spec strings.
    :param clock: the clock that ``at=`` triggers and delays are measured on.
    :param seed: seed of the generator behind probabilistic faults and junk bytes.
    """

    def __init__(
        self,
        device: Any,
        faults: list[FaultSpec | str] | tuple[FaultSpec | str, ...],
        *,
        clock: Clock,
        seed: int = 0,
    ) -> None:
        self.device = device
        self.clock = clock
        self.specs = [parse_fault(f) if isinstance(f, str) else f for f in faults]
        self._rng = random.Random(seed)
        self._lock = threading.RLock()  # the control plane may add faults from another thread
        self._t0 = clock.monotonic_ns()
        self._deframer = PumpDeframer()
        self._match_counts = [0] * len(self.specs)
        self._scheduled: list[_Scheduled] = []
        self._delayed: list[tuple[int, bytes]] = []  # device -> host bytes held back
        self._rx_delayed: list[tuple[int, bytes]] = []  # host -> device bytes held back
        self._disconnected = False
        #: Every fault that fired: (clock time ns, spec text, what happened).
        self.log: list[tuple[int, str, str]] = []
        for spec in self.specs:
            if spec.at_s is not None:
                self._scheduled.append(_Scheduled(self._t0 + round(spec.at_s * NS_PER_S), "fire", spec))

    def add(self, fault: FaultSpec | str) -> FaultSpec:
        """Add a fault while running; ``at=`` counts from now, ``after=`` from the next command.

        :raises ConfigError: for a bad spec string.
        """
        spec = parse_fault(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._match_counts.append(0)
            self.specs.append(spec)
            if spec.at_s is not None:
                now = self.clock.monotonic_ns()
                self._scheduled.append(_Scheduled(now + round(spec.at_s * NS_PER_S), "fire", spec))
        return spec

    # -- protocol -------------------------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        """Pass host bytes through the rx faults to the device, and its replies through the tx faults."""
        with self._lock:
            return self._receive(data)

    def _receive(self, data: bytes) -> bytes:
        now = self.clock.monotonic_ns()
        out = bytearray(self._run_scheduled(now))
        if self._disconnected:
            return b""
        out += self._release_rx(now)
        data, late = self._gap_split(self._byte_faults(data, "rx"), "rx", now)
        if late is not None:
            self._rx_delayed.append(late)
        out += self._feed(data, now)
        out += self._release_delayed(now)
        return bytes(out)

    def poll(self) -> bytes:
        """Run due scheduled faults, release delayed bytes, and pass unsolicited bytes through tx faults."""
        with self._lock:
            return self._poll()

    def _poll(self) -> bytes:
        now = self.clock.monotonic_ns()
        out = bytearray(self._run_scheduled(now))
        if self._disconnected:
            return b""
        out += self._release_rx(now)
        out += self._transmit(self.device.poll(), now)
        out += self._release_delayed(now)
        return bytes(out)

    def _feed(self, data: bytes, now: int) -> bytes:
        """Hand host bytes to the device one at a time, attributing each reply to its command."""
        out = bytearray()
        for byte in data:
            one = bytes((byte,))
            safe_mode = bool(getattr(self.device, "safe_mode", False))
            frames = [f for f in self._deframer.feed(one, now / NS_PER_S, safe_mode=safe_mode) if isinstance(f, Frame)]
            reply = self.device.receive(one)
            for frame in frames:
                reply = self._on_command(frame, reply, now)
            out += self._transmit(reply, now)
        return bytes(out)

    def _transmit(self, data: bytes, now: int) -> bytes:
        data, late = self._gap_split(self._byte_faults(data, "tx"), "tx", now)
        if late is not None:
            self._delayed.append(late)
        return data

    def _gap_split(self, data: bytes, direction: str, now: int) -> tuple[bytes, tuple[int, bytes] | None]:
        """Cut ``data`` where a ``gap`` fault pauses the line: (bytes now, (release time, rest) or None)."""
        gaps = [s for s in self.specs if s.kind == "gap" and s.direction == direction]
        if not gaps or not data:
            return data, None
        for index in range(1, len(data)):  # a pause between bytes; before the first it is mere latency
            for spec in gaps:
                if self._rng.random() < (spec.probability or 0.0):
                    pause_ns = round(float(spec.params.get("s", "0.6")) * NS_PER_S)
                    self._note(now, spec, f"gap of {pause_ns / NS_PER_S:g} s before byte {index} ({direction})")
                    return data[:index], (now + pause_ns, data[index:])
        return data, None

    def _release_rx(self, now: int) -> bytes:
        due = [item for item in self._rx_delayed if item[0] <= now]
        if not due:
            return b""
        self._rx_delayed = [item for item in self._rx_delayed if item[0] > now]
        out = bytearray()
        for _, data in sorted(due, key=lambda item: item[0]):
            data, late = self._gap_split(data, "rx", now)
            if late is not None:
                self._rx_delayed.append(late)
            out += self._feed(data, now)
        return bytes(out)

    def next_poll_ns(self) -> int | None:
        """Earliest of the device's next event, the next scheduled fault and the next delayed release."""
        with self._lock:
            times = [s.time_ns for s in self._scheduled] + [t for t, _ in self._delayed + self._rx_delayed]
        hook = getattr(self.device, "next_poll_ns", None)
        inner = hook() if callable(hook) else None
        if inner is not None:
            times.append(inner)
        return min(times) if times else None

    def wants_disconnect(self) -> bool:
        """True once a ``disconnect`` fault fired."""
        return self._disconnected

    # -- internals ------------------------------------------------------------------------
    def _note(self, now: int, spec: FaultSpec, what: str) -> None:
        self.log.append((now, spec.text or spec.kind, what))

    def _run_scheduled(self, now: int) -> bytes:
        out = bytearray()
        while True:
            due = [s for s in self._scheduled if s.time_ns <= now]
            if not due:
                return bytes(out)
            item = min(due, key=lambda s: s.time_ns)
            self._scheduled.remove(item)
            self._device_fault(item.spec, item.action, item.time_ns)
            out += self._transmit(self.device.poll(), now) if not self._disconnected else b""

    def _device_fault(self, spec: FaultSpec, action: str, now: int) -> None:
        kind = spec.kind
        if kind == "disconnect":
            self._disconnected = True
        elif kind == "stall":
            self.device.inject_stall()
        elif kind == "seize":
            self.device.seize_motor(action != "clear")
            if action != "clear" and "clear" in spec.params:
                self._scheduled.append(_Scheduled(now + round(float(spec.params["clear"]) * NS_PER_S), "clear", spec))
        elif kind == "occlusion":
            self.device.set_occluded(action != "clear")
            if action != "clear" and "clear" in spec.params:
                self._scheduled.append(_Scheduled(now + round(float(spec.params["clear"]) * NS_PER_S), "clear", spec))
        elif kind == "power-cycle":
            if action == "restore":
                self.device.power_restore()
            else:
                self.device.power_loss()
                off_ns = round(float(spec.params.get("off", "0")) * NS_PER_S)
                if off_ns == 0:
                    self.device.power_restore()
                else:
                    self._scheduled.append(_Scheduled(now + off_ns, "restore", spec))
        self._note(now, spec, action if action != "fire" else kind)

    def _on_command(self, frame: Frame, reply: bytes, now: int) -> bytes:
        text = normalise(frame.data)
        for index, spec in enumerate(self.specs):
            if spec.after is None:
                continue
            if spec.match is not None and re.search(spec.match, text) is None:
                continue
            self._match_counts[index] += 1
            nth = self._match_counts[index]
            if not spec.after <= nth < spec.after + spec.count:
                continue
            if spec.kind in DEVICE_KINDS:
                self._device_fault(spec, "fire", now)
                if spec.kind == "disconnect":
                    return b""
                continue
            reply = self._reply_fault(spec, reply, now, text)
        return reply

    def _reply_fault(self, spec: FaultSpec, reply: bytes, now: int, command: str) -> bytes:
        kind = spec.kind
        self._note(now, spec, f"{kind} on {command!r}")
        if kind in ("lost-reply", "drop"):
            return b""
        if kind == "dup":
            return reply + reply
        if kind == "corrupt" and reply:
            index = self._rng.randrange(len(reply))
            flipped = reply[index] ^ (1 << self._rng.randrange(8))
            return reply[:index] + bytes((flipped,)) + reply[index + 1 :]
        if kind == "junk":
            count = int(spec.params.get("bytes", "3"))
            return bytes(self._rng.randrange(256) for _ in range(count)) + reply
        if kind == "delay":
            self._delayed.append((now + round(float(spec.params.get("s", "1")) * NS_PER_S), reply))
            return b""
        if kind == "split" and reply:
            cut = int(spec.params.get("at_byte", str(max(1, len(reply) // 2))))
            self._delayed.append((now + round(float(spec.params.get("s", "0.05")) * NS_PER_S), reply[cut:]))
            return reply[:cut]
        return reply

    def _byte_faults(self, data: bytes, direction: str) -> bytes:
        if not data:
            return data
        active = [
            s for s in self.specs if s.probability is not None and s.kind != "gap" and s.direction == direction
        ]
        if not active:
            return data
        out = bytearray()
        for byte in data:
            emitted = [byte]
            for spec in active:
                if not emitted or self._rng.random() >= (spec.probability or 0.0):
                    continue
                if spec.kind == "drop":
                    emitted = []
                elif spec.kind == "dup":
                    emitted = emitted + emitted
                elif spec.kind == "corrupt":
                    emitted = [b ^ (1 << self._rng.randrange(8)) for b in emitted]
            out += bytes(emitted)
        return bytes(out)

    def _release_delayed(self, now: int) -> bytes:
        due = sorted((item for item in self._delayed if item[0] <= now), key=lambda item: item[0])
        if not due:
            return b""
        self._delayed = [item for item in self._delayed if item[0] > now]
        out = bytearray()
        for _, data in due:
            data, late = self._gap_split(data, "tx", now)
            if late is not None:
                self._delayed.append(late)
            out += data
        return bytes(out)
