itb-signature/1
kind: prescription
file: cerebral_refill_400_2000.toml
size: 1046
sha256: c8204a78740a423faea44bb5cfe2f5f07b7eea6dc2c624ccdca6dfaa459790b2
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:44+00:00
signature: GS3m+JpA3Tfap6aB6IwT2OXPfLSaUs8tG47dQSydIPLIKsA49p84RvNy30qr9dh4KDHQMnzAF7tgBjJn+p01Dw==
