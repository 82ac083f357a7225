itb-signature/1
kind: prescription
file: spinal_taper_300_500.toml
size: 792
sha256: 3b731ae85a2fc2974056b4769265179cacafa25fa65508eb150e0e803741abd0
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:51+00:00
signature: ucMdwHrBxjbGwdj4bbllDKTwD3pfsKId4xPELc08mNy/yRL1X3jXlFNstpZb8VsbkHZzJv25/oMYIAQtkslSDA==
