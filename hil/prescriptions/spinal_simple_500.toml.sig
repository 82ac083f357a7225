itb-signature/1
kind: prescription
file: spinal_simple_500.toml
size: 843
sha256: a347389b03c9f61302b2ec5ce3a8259769925c515b5186a63e74ae024278c7a7
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:50+00:00
signature: JGwv39wgrep59NK2avXb1u0LKfPFEzzoyCYEwGL33Aw+VYuAvr5gvNxwzULmHl7gmRnSuVpkdVP/nIgzIjHHBQ==
