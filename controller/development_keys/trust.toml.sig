itb-signature/1
kind: trust-store
file: trust.toml
size: 1666
sha256: d84048fd0b7066e0d837e13ea8a0aa8a8638de07e15014e7ae43ecfdef89a181
key: 0756fbcded3bd1c9
signed-utc: 2026-12-02T00:48:38+00:00
signature: HZgLS428SYgHmV8Yui7G/ojKHhn0yZae120LaeJmMBMv0rOKYM3dAqu6Up5S4qWwF/4NBpySD1MZTqB+CbW7CA==
