itb-signature/1
kind: prescription
file: cerebral_flex_1000.toml
size: 1059
sha256: 7ce4cf9bd1f9f707eb99ec6cbcc9a298028af623284bd646f0b39efce896b18f
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:43+00:00
signature: 04pwrk4IrhuqS4xBop5RFbCMmJJbBjKXMvYlBa1DRGhAXoPtngXTRuIMadeBORNrYSWxXW8JsFRdUrDsTWwvAg==
