"""Hardware abstraction layer: device role interfaces, wire codecs and drivers.

``hal`` imports nothing else of ours. It holds what every higher layer shares:
the error tree (:mod:`hal.errors`), the injected :class:`~hal.clock.Clock`, the
pump role interface (:mod:`hal.pump`) and one I/O-free codec per wire protocol.
"""
