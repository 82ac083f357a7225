itb-signature/1
kind: prescription
file: rx_paediatric.toml
size: 853
sha256: 0461c1f3c2be3e5fa644e5edba53c13406126ca2e2a306c50493cf9302261edf
key: b5a80ff97552cf32
signed-utc: 2026-12-02T03:10:18+00:00
signature: 3ZLVE7M/owJCfcB6RRANIYrG5n2qVqlFdOfLTLJC8jQQ8LV0XDe9zuB9d8Ggww9p1ciSXpkjks01PH+nGy71Dw==
