itb-signature/1
kind: prescription
file: spinal_screened_150_500.toml
size: 1114
sha256: 0c7c2ea426b5310cfe30c3bf60e39496cd71edb46ad6dccb62155079b1b7a216
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:49+00:00
signature: Q6PPntKybhuWmcVzSuWQrdNkz0PyjtJeNfNu3baytY14mBCiQuV/s0BRscXHVb9PFxAZ99Dh5MKb3R8U5BZdDQ==
