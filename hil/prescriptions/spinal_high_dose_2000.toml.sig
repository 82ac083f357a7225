itb-signature/1
kind: prescription
file: spinal_high_dose_2000.toml
size: 1244
sha256: ab6acdefb7380b25114b49823aa1d36ece81de28e90b66a83c468d85bf848c7f
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:47+00:00
signature: djja89+xc73a+LpgchX8DPKZ3QsSz5o8ORiFAaupC+nSUw6cbYzXGZ6ukhN451xWSJJmRyWtgf141bZd7/JJBg==
