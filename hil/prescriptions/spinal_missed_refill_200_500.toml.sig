itb-signature/1
kind: prescription
file: spinal_missed_refill_200_500.toml
size: 796
sha256: b0b25487673b8f6ada7830df8e45d832544fc545e9700afbc2c3d42d6cdbde01
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:48+00:00
signature: vkhkrlz8I5jerxK2VD2ecYwAsuO4wykmlcppFTxcAA2mxxt4Y39JBALh4k5eq7Jgv6ZIjGPWX254uNRWjy8PAg==
