itb-signature/1
kind: prescription
file: rx_spinal.toml
size: 860
sha256: dcf45e020cd06425ce4f904709e6133e1d0c2867fdd60b3800d4a0437d8f12b3
key: b5a80ff97552cf32
signed-utc: 2026-12-02T03:10:18+00:00
signature: BXcn+hi8l2ExlxwHKxGLfVK/g1yAaBVnpMlJH8TXCZxK/ANFoKBA6esnwl+0GhCmrNiXzB3j5vUoVseDFiOzAQ==
