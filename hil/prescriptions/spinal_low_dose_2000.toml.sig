itb-signature/1
kind: prescription
file: spinal_low_dose_2000.toml
size: 1020
sha256: 5d2204dbf6173e98020227971017f34406eb34f6904aa6891759f46e4b6c1a76
key: b5a80ff97552cf32
signed-utc: 2026-12-02T03:39:55+00:00
signature: Jebzy2dNN3OmRXW1t9Zk1r1uKNfKaPTOZf8cdCLRhIdGqN47tBStTXtA6Ysvh1FTEBYaEnvZ/DUh+htj7cj5Ag==
