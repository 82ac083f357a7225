itb-signature/1
kind: prescription
file: spinal_faults_200_500.toml
size: 858
sha256: 2c16ae6f3730badeceedd5ad6f82b9485682bf15b428116e1c938111f097e771
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:46+00:00
signature: PX27GmXcoV1R/H9jTdEjjGOLpVWfpmwb/qEhEJaJ0G0A5UK0h+5BuUJLXtAnG0IkcnKV3LcpZAmXVDvxAU2RDQ==
