"""``itb sim serve``: put a simulated pump (and optionally a balance) online for any client.

The first line on stdout names the pump's endpoint and ends with the device
path or ``socket://`` URL; with ``--balance`` the second line does the same for
the balance. Both lines are flushed at once, so a parent process can read them
and connect. The simulator then runs in real time multiplied by ``--speed``
until SIGINT or SIGTERM, and exits 0 after closing every port.

With ``--control`` the simulator also reads a test-only control plane from
stdin, separate from the pump protocol: one command per line, one JSON line
answered on stdout (see :data:`CONTROL_COMMANDS`)::

    state | stall | occlude | clear-occlusion | power-loss | power-restore | power-cycle
    refill ML | fault SPEC
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import textwrap
import threading
import time
from contextlib import ExitStack
from types import FrameType
from typing import Any

from cython_ext import fields
from cython_ext.errors import ConfigError, HalUnavailableError
from sim.faults import parse_fault
from sim.newera.profile import NE1000_V3_928, PROFILES
from hil.cli_options import add_command_group

PUMPS = ("ne1000",)
#: Control-plane commands (``--control``) and what they do to the simulated pump.
CONTROL_COMMANDS = {
    "state": "report state, alarm, counters, actual delivered volume and syringe contents",
    "stall": "stall the motor (A?S)",
    "occlude": "block the outlet (stalls after the occlusion delay while infusing)",
    "clear-occlusion": "clear the block",
    "power-loss": "cut power",
    "power-restore": "restore power (A?R)",
    "power-cycle": "cut and restore power",
    "refill": "refill ML: set the syringe contents while still, mL",
    "fault": "fault SPEC: add a fault now (see sim.faults; at= counts from now)",
}
#: What the simulated pump implements and what it answers otherwise (``itb sim serve --help``, README).
PUMP_SUMMARY = """\
simulated NE-1000 (profile ne1000-v3.928; ne1000x2-v3.928 has 340 phases):
  framing     Basic (CR in, STX..ETX out) and Safe (length, CRC-16/XMODEM); a reply
              is framed in the mode in effect after its command (a Safe-framed SAF0
              is answered in Basic framing); Safe packets are accepted in Basic
              mode; Basic packets are ignored in Safe mode unless they hold a '*'
              command; a Safe packet with a gap over 0.5 s between bytes is dropped;
              the SAF watchdog stops the pump with A?T, sent unprompted
  addressing  0-99, two-digit reply address, other addresses stay silent; '*'
              reaches every pump (*RUN, *STP; *ADR, *RESET need it); network
              bursts '<n> <command> * <m> <command> *'
  commands    VER DIA RAT VOL DIR RUN PUR STP DIS CLD SAF PHN FUN AL PF BP LOC
              LOC P DIN ROM LN BUZ TRG IN OUT *ADR *RESET
  program     phases 1-41 run by RUN [n] on the clock: FUN RAT INC DEC STP JMP n
              LOP n LPS LPE PAS n IF n EVN n EVR BEP OUT n; PHN reports the phase
              that runs
  numbers     4 significant digits fixed by magnitude: 0.000 16.09 100.0 1000.
  alarms      A?R at power-up (that first command is not executed), A?S stall,
              occlusion or end of travel, A?T watchdog, A?O phase out of range,
              A?E program error; the alarm reply acknowledges it
  otherwise   ? unknown command or parameters (also RAT C and RAT I, which NE-1000
              firmware lacks), ?OOR out of range, ?NA not now (edits while
              pumping), ?COM corrupt packet (nothing with bad_packet_reply=silent)
"""
BALANCES = ("mtsics", "sbi")
BAUD_RATES = (19200, 9600, 2400, 1200, 300)


def balance_help() -> str:
    """What each simulated balance answers, built from the emulators' own command tables."""
    from sim.balance.mtsics import IMPLEMENTED_COMMANDS, LEVELS
    from sim.balance.sbi import IMPLEMENTED_CODES

    by_level: dict[int, list[str]] = {}
    for level, name in IMPLEMENTED_COMMANDS:
        by_level.setdefault(level, []).append(name)
    sics = "; ".join(f"level {level}: {' '.join(names)}" for level, names in sorted(by_level.items()))
    sbi = " ".join(f"ESC {code}" for code in IMPLEMENTED_CODES)
    return (
        f"balances: --balance mtsics is a Mettler Toledo XPE205 (MT-SICS, I1 levels \"{LEVELS[0]}\"), answering {sics}; "
        "S, Z and T wait up to 10 s for stability, then answer 'I'; any other command, a lower-case one or "
        "unexpected parameters answer ES, a line over 128 bytes ET. "
        f"--balance sbi is a Sartorius Cubis MSE225S (SBI) acting on {sbi}: ESC P and ESC p_ print one "
        "16-character line (22 with --sbi-id-codes: ID N, or Stat for High/Low), ESC x1_/x2_/x3_ answer model, "
        "Ser.no-labelled serial number and version, the others act silently; any other code is ignored "
        "without a reply."
    )


def _link(text: str) -> tuple[str, int]:
    """Parse ``pty`` or ``tcp:PORT`` (``tcp`` alone picks a free port)."""
    if text == "pty":
        return "pty", 0
    kind, _, port = text.partition(":")
    if kind == "tcp":
        if not port:
            return "tcp", 0
        if port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535:
            return "tcp", int(port)
    raise argparse.ArgumentTypeError(f"link (={text!r}) must be 'pty' or 'tcp:PORT' with PORT in [0, 65535]")


#: Largest ``--speed`` of a served simulator (virtual seconds per real second).
MAX_SERVE_SPEED = 100_000


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb sim`` and its ``serve`` subcommand."""
    actions = add_command_group(subparsers, "sim",
                                "run simulated devices (a New Era pump, a balance) on a pty or TCP port",
                                "Simulated devices that speak the exact wire protocols.")
    serve = actions.add_parser(
        "serve",
        help="serve a simulated pump until SIGINT/SIGTERM",
        description=(
            "Serve one simulated pump in real time x --speed. The first stdout line ends with the pump's "
            "device path or socket:// URL; with --balance the second line ends with the balance's."
        ),
        epilog=PUMP_SUMMARY + "\n" + textwrap.fill(balance_help(), width=79),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--pump", choices=PUMPS, default="ne1000", help="pump model (default ne1000)")
    serve.add_argument("--link", type=_link, default=("pty", 0), metavar="pty|tcp:PORT", help="where to serve it")
    serve.add_argument("--address", type=fields.int_arg("--address", 0, 99), default=0, help="pump address 0-99")
    serve.add_argument(
        "--baud", type=fields.int_arg("--baud", min(BAUD_RATES), max(BAUD_RATES)), choices=BAUD_RATES, default=None,
        help="pace bytes at this baud (8N1); default unpaced"
    )
    serve.add_argument(
        "--safe-timeout",
        type=fields.int_arg("--safe-timeout", 0, 255, "s"),
        default=0,
        metavar="S",
        help="start in Safe mode with an S-second watchdog (0: Basic mode)",
    )
    serve.add_argument(
        "--speed",
        type=fields.float_arg("--speed", 0, MAX_SERVE_SPEED, low_open=True),
        default=1.0,
        help=f"virtual seconds per real second, in (0, {MAX_SERVE_SPEED}]",
    )
    serve.add_argument("--fault", action="append", default=[], metavar="SPEC", help="fault spec (see sim.faults)",
                       type=fields.checked_arg(parse_fault, keep_text=True))
    serve.add_argument("--trace", default=None, metavar="FILE", help="write a timestamped byte trace")
    serve.add_argument(
        "--balance", choices=BALANCES, default=None, help="also serve a balance weighing the output (see below)"
    )
    serve.add_argument(
        "--sbi-id-codes",
        action="store_true",
        help="SBI balance: 22-character lines with ID codes (the 'output with ID code' menu setting)",
    )
    serve.add_argument("--log-traffic", action="store_true", help="print every chunk of traffic to stderr")
    serve.add_argument("--seed", type=fields.int_arg("--seed", *fields.SEED_RANGE), default=0,
                       help="seed for delivery noise and random faults")
    serve.add_argument("--bias-pct", type=fields.float_arg("--bias-pct", -50, 50, "%"), default=0.0,
                       help="systematic delivery error, percent")
    serve.add_argument("--noise-pct", type=fields.float_arg("--noise-pct", 0, 20, "%"), default=0.0,
                       help="random delivery error, percent")
    serve.add_argument("--diameter-mm", type=fields.decimal_arg("--diameter-mm", "0.1", 50, "mm"), default="8.585",
                       help="syringe inside diameter at start, mm")
    serve.add_argument("--syringe-ml", type=fields.decimal_arg("--syringe-ml", 0, 1000, "mL", low_open=True),
                       default="3",
                       help="syringe capacity, mL")
    serve.add_argument("--fill-ml", type=fields.decimal_arg("--fill-ml", 0, 1000, "mL"), default=None,
                       help="syringe contents at start, mL (default: full)")
    serve.add_argument(
        "--dose-step-nl",
        type=fields.int_arg("--dose-step-nl", 0, 10**9, "nL"),
        default=0,
        help="volume of one motor step, nL (0: continuous flow)",
    )
    serve.add_argument(
        "--profile", choices=sorted(PROFILES), default=NE1000_V3_928.name, help="model and firmware profile"
    )
    serve.add_argument(
        "--control", action="store_true", help="read control-plane commands (stall, occlude, state...) from stdin"
    )
    serve.add_argument(
        "--no-reset-alarm", action="store_true", help="start without the power-up A?R alarm latched"
    )
    serve.set_defaults(func=_serve)


_PRINT_LOCK = threading.Lock()


def _traffic_printer(label: str, start: float) -> Any:
    lock = _PRINT_LOCK

    def show(direction: str, data: bytes) -> None:
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)
        with lock:
            line = f"{time.monotonic() - start:10.4f} {label} {direction} {data.hex(' ')}  |{text}|"
            print(line, file=sys.stderr, flush=True)

    return show


def handle_control(line: str, pump: Any, faults: Any = None) -> dict[str, Any]:
    """Run one control-plane command against a simulated pump and return the JSON-able answer.

    :param line: e.g. ``"stall"``, ``"refill 2.5"`` or ``"fault lost-reply:match=RUN"``.
    :param pump: the :class:`~sim.newera.Ne1000`.
    :param faults: the rig's :class:`~sim.faults.FaultyDevice` (needed by ``fault``).
    """
    words = line.split()
    if not words:
        return {"error": "empty command", "commands": sorted(CONTROL_COMMANDS)}
    name, params = words[0].lower(), words[1:]
    if name not in CONTROL_COMMANDS:
        return {"error": f"unknown command {name!r}", "commands": sorted(CONTROL_COMMANDS)}
    if (name in ("refill", "fault")) != (len(params) == 1):
        return {"error": f"{name}: wrong number of parameters", "usage": CONTROL_COMMANDS[name]}
    try:
        if name == "stall":
            pump.inject_stall()
        elif name == "occlude":
            pump.set_occluded(True)
        elif name == "clear-occlusion":
            pump.set_occluded(False)
        elif name == "power-loss":
            pump.power_loss()
        elif name == "power-restore":
            pump.power_restore()
        elif name == "power-cycle":
            pump.power_cycle()
        elif name == "refill":
            pump.refill(params[0])
        elif name == "fault":
            if faults is None:
                return {"error": "fault: this simulator has no fault layer"}
            faults.add(params[0])
    except ValueError as exc:
        return {"error": str(exc)}
    infused_nl, withdrawn_nl = pump.dispensed_nl()
    return {
        "ok": name,
        "state": pump.state,
        "alarm": pump.alarm,
        "powered": pump.powered,
        "occluded": pump.occluded,
        "safe_timeout_s": pump.safe_timeout_s,
        "infused_nl": infused_nl,
        "withdrawn_nl": withdrawn_nl,
        "actual_delivered_nl": pump.mechanics.actual_delivered_nl(),
        "contents_nl": pump.mechanics.contents_nl(),
    }


def _control_loop(pump: Any, faults: Any) -> None:
    for line in sys.stdin:
        answer = handle_control(line, pump, faults)
        with _PRINT_LOCK:
            print(json.dumps(answer, sort_keys=True), flush=True)


def _load_balance_factory() -> Any:
    try:
        module = importlib.import_module("sim.balance")
        return module.create_balance
    except (ImportError, AttributeError) as exc:
        raise HalUnavailableError(
            f"simulated balances are not available (sim.balance.create_balance: {exc}); serve the pump alone"
        ) from exc


def _serve(args: argparse.Namespace) -> int:
    from sim.clock import ScaledClock
    from sim.endpoints import PtyEndpoint, TcpEndpoint
    from sim.rig import simulated_pump

    if args.sbi_id_codes and args.balance != "sbi":
        raise ConfigError("--sbi-id-codes", True, "given only with --balance sbi")
    link, port = args.link
    clock = ScaledClock(args.speed)
    stop = threading.Event()
    started = time.monotonic()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ExitStack() as stack:
            rig = stack.enter_context(
                simulated_pump(
                    link,
                    clock=clock,
                    address=args.address,
                    seed=args.seed,
                    faults=args.fault,
                    trace_path=args.trace,
                    pace_baud=args.baud,
                    port=port,
                    on_traffic=_traffic_printer("pump", started) if args.log_traffic else None,
                    safe_timeout_s=args.safe_timeout,
                    bias_pct=args.bias_pct,
                    noise_pct=args.noise_pct,
                    syringe_diameter_mm=args.diameter_mm,
                    syringe_volume_ml=args.syringe_ml,
                    fill_ml=args.fill_ml,
                    dose_step_nl=args.dose_step_nl,
                    profile=PROFILES[args.profile],
                    power_on_alarm=not args.no_reset_alarm,
                    fault_layer=True if args.control else None,
                )
            )
            if args.baud is not None:
                rig.device.baud = args.baud
            speed = f" at {args.speed:g}x" if args.speed != 1 else ""
            print(f"{args.pump} address {args.address}{speed} on {rig.url}", flush=True)
            if args.balance is not None:
                create_balance = _load_balance_factory()
                options = {"id_codes": True} if args.sbi_id_codes else {}
                balance = create_balance(
                    args.balance, clock, rig.device.mechanics.actual_delivered_nl, seed=args.seed, **options
                )
                traffic = _traffic_printer("balance", started) if args.log_traffic else None
                endpoint = (
                    PtyEndpoint(balance, on_traffic=traffic)
                    if link == "pty"
                    else TcpEndpoint(balance, port=0, on_traffic=traffic)
                )
                stack.callback(endpoint.close)
                print(f"{args.balance} balance on {endpoint.url}", flush=True)
            if args.control:
                # Daemon: it may sit in a blocking stdin read when the process exits.
                threading.Thread(
                    target=_control_loop, args=(rig.device, rig.faults), name="itbsim-control", daemon=True
                ).start()
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("itb sim serve: stopped", file=sys.stderr, flush=True)
    return 0
