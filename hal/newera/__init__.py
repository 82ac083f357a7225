"""New Era Pump Systems (NE-300/500/1000/1600 family, also sold as WPI Aladdin).

* :mod:`hal.newera.framing`: Basic and Safe packet framing and CRC, shared with the simulator;
* :mod:`hal.newera.codec`: typed requests and replies, the number format, rate units (no I/O);
* :mod:`hal.newera.transaction`: one request, the one reply that answers it (matching, draining,
  stray alarms, frame and message traces);
* :mod:`hal.newera.driver`: :class:`~hal.newera.driver.Ne1000Driver`, the ``"ne1000"`` pump driver.
"""
