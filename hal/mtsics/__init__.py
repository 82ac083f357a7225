"""Mettler Toledo MT-SICS balances: I/O-free codec (:mod:`hal.mtsics.codec`) and driver (:mod:`hal.mtsics.driver`)."""
