"""The New Era transaction layer alone: matching, draining, stray alarms and the trace hooks."""

from __future__ import annotations

import pytest

from cython_ext.errors import ConfigError, LinkTimeoutError, StateError
from hal.newera import codec
from hal.newera.codec import Command, Reply, Request
from hal.newera.driver import Ne1000Driver
from hal.newera.framing import Frame, FrameError, FrameKind, encode_safe
from hal.newera.transaction import Transactions
from hal.pump import PumpAlarm, PumpState
from hal_links import ScriptedLink
from sim.clock import VirtualClock


def r(data: str) -> bytes:
    """A Basic-mode reply frame."""
    return b"\x02" + data.encode() + b"\x03"


def q(data: str) -> bytes:
    """A Basic-mode request."""
    return data.encode() + b"\r"


def transactions(link: ScriptedLink, **hooks: object) -> Transactions:
    return Transactions(link, address=0, clock=VirtualClock(), **hooks)  # type: ignore[arg-type]


def test_a_late_reply_to_an_earlier_query_never_answers_this_one() -> None:
    link = ScriptedLink([(q("0DIS"), r("00S41.67UH") + r("00SI1.000W0.000ML"))])
    tx = transactions(link)
    answer = tx.execute(codec.query(0, Command.DIS), codec.parse_dispensed)
    assert answer.value == (1_000_000, 0)
    assert tx.stats.unmatched_replies == 1
    link.assert_done()


def test_the_parser_runs_once_per_reply_and_its_value_is_kept() -> None:
    calls: list[str] = []

    def parse(data: str) -> str:
        calls.append(data)
        return data.lower()

    link = ScriptedLink([(q("0VER"), r("00SNE1000V3.928"))])
    assert transactions(link).execute(codec.query(0, Command.VER), parse).value == "ne1000v3.928"
    assert calls == ["NE1000V3.928"]


def test_alarm_and_error_replies_answer_any_request_and_alarms_are_logged_acknowledged() -> None:
    link = ScriptedLink([(q("0DIS"), r("00A?S")), (q("0RAT"), r("00S?NA"))])
    tx = transactions(link)
    assert tx.execute(codec.query(0, Command.DIS), codec.parse_dispensed).reply.alarm is codec.AlarmType.STALL
    assert tx.execute(codec.query(0, Command.RAT), codec.parse_rate).reply.error is codec.ErrorCode.NOT_APPLICABLE
    (event,) = tx.alarms
    assert (event.alarm, event.acknowledged, event.command) == (PumpAlarm.STALL, True, "0DIS")
    assert tx.last_state is PumpState.STOPPED


def test_an_unsolicited_safe_alarm_is_logged_unacknowledged_before_the_next_request() -> None:
    link = ScriptedLink([(encode_safe(b"0"), encode_safe(b"00S"))])
    tx = transactions(link)
    tx.safe = True
    link.inject(encode_safe(b"00A?T"))
    tx.execute(codec.status_request(0), False)
    assert [(e.alarm, e.acknowledged) for e in tx.alarms] == [(PumpAlarm.COMMS_TIMEOUT, False)]
    assert tx.stats.stray_bytes == len(encode_safe(b"00A?T"))


def test_a_timeout_drains_the_line_and_raises() -> None:
    link = ScriptedLink([(q("0"), None)])
    tx = transactions(link)
    with pytest.raises(LinkTimeoutError):
        tx.execute(codec.status_request(0), False)
    assert tx.stats.timeouts == 1
    assert tx.last_valid_ns is None


def test_a_mode_switch_takes_its_reply_in_either_framing() -> None:
    request = codec.safe_mode_request(0, 0)
    link = ScriptedLink([(encode_safe(b"0SAF0"), r("00S")), (q("0SAF10"), encode_safe(b"00S"))])
    tx = transactions(link)
    tx.safe = True
    assert tx.execute_mode_switch(request).prompt is codec.Prompt.STOPPED
    tx.safe = False
    assert tx.execute_mode_switch(codec.safe_mode_request(0, 10)).prompt is codec.Prompt.STOPPED
    assert tx.stats.frame_errors == 0  # the framing that does not apply is not counted as noise


def test_frame_and_message_hooks_see_every_packet_and_message_in_order() -> None:
    frames: list[tuple[bool, Frame | FrameError]] = []
    messages: list[tuple[bool, Request | Reply]] = []
    link = ScriptedLink([(q("0VER"), b"\x99" + r("00SNE1000V3.928"))])
    tx = transactions(link, trace_frame=lambda s, f: frames.append((s, f)),
                      trace_message=lambda s, m: messages.append((s, m)))
    tx.execute(codec.query(0, Command.VER), codec.parse_version)
    assert frames == [
        (True, Frame(FrameKind.BASIC, b"0VER")),
        (False, FrameError("stray", b"\x99")),
        (False, Frame(FrameKind.BASIC, b"00SNE1000V3.928")),
    ]
    assert messages == [(True, Request(0, Command.VER)), (False, codec.parse_reply(b"00SNE1000V3.928"))]


def test_the_driver_passes_its_hooks_to_the_transaction_layer_and_checks_them() -> None:
    sent: list[bytes] = []
    link = ScriptedLink([(q("0"), r("00S")), (q("0"), r("00S")), (q("0DIA"), r("00S14.43")), (q("0RAT"), r("00S10UH"))])
    driver = Ne1000Driver(link, trace_frame=lambda s, f: sent.append(f.data) if s else None)
    driver.connect()
    assert sent == [b"0", b"0", b"0DIA", b"0RAT"]
    with pytest.raises(ConfigError) as info:
        Ne1000Driver(ScriptedLink(), trace_message="print")  # type: ignore[arg-type]
    assert info.value.field == "trace_message"


def test_a_closed_layer_refuses_to_send() -> None:
    tx = transactions(ScriptedLink())
    tx.link = None
    with pytest.raises(StateError):
        tx.execute(codec.status_request(0), False)
