"""Sartorius SBI balances: I/O-free codec (:mod:`hal.sartorius.codec`) and driver (:mod:`hal.sartorius.driver`)."""
