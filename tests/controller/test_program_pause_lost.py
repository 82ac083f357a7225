"""A bolus program whose pause got no reply was never staged nor run: it is not booked as running (issue #11).

Found by the driver-plus-loop fuzz (``tests/hal/test_driver_loop_fuzz.py``, seed 251): in a long
outage the pause before programming timed out, the status read that followed saw the pump
infusing its old basal programme, and the controller reported "program of 2 phases verified and
running" and started a bolus the pump never delivered. The oracle here is the fake pump's own
state: what it was commanded, not the controller's ledger.
"""

from __future__ import annotations

from typing import Any

from cython_ext.errors import LinkTimeoutError
from hal.pump import PumpState
from tests.controller.conftest import MS_PER_MIN


def test_a_bolus_whose_pause_got_no_reply_is_not_booked_as_running(running: Any) -> None:
    running.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    basal = running.pump.rate_nl_per_h
    pause = running.pump.pause
    calls = []

    def lost(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise LinkTimeoutError("no reply to the pause (injected)")

    running.pump.pause = lost
    seen = len(running.events)
    running.therapy.patient_bolus_request()
    running.pump.pause = pause
    assert calls, "the bolus never tried to pause the pump"
    assert running.pump.state is PumpState.INFUSING and running.pump.rate_nl_per_h == basal  # nothing changed
    started = [p for e, p in running.events[seen:] if e == "bolus_start"]
    committed = [p for e, p in running.events[seen:] if e == "program" and p["result"] == "committed"]
    assert not started and not committed, (started, committed)
    assert running.loop.committed_rate_nl_per_h in (None, basal)
    running.advance(2 * 30 * MS_PER_MIN)  # the next polls settle it, and the basal runs on
    assert running.pump.state is PumpState.INFUSING and running.pump.rate_nl_per_h == basal
    assert running.loop.committed_rate_nl_per_h == basal
