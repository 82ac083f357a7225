itb-signature/1
kind: prescription
file: rx_cerebral.toml
size: 868
sha256: f18823b1dc5d60297061871a8ef5530fecb5a60e6eab8486c59579ac10f38994
key: b5a80ff97552cf32
signed-utc: 2026-12-02T03:10:17+00:00
signature: KtLlPnjKtAmpmxaDYKUsxJRg+IGZJRgqPQuzFH5McTz+VPv9uGFrSheP6VSiE/wSSbUPaHRED4auIV0Bh7WvDQ==
