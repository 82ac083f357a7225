itb-signature/1
kind: prescription
file: paediatric_periodic_500.toml
size: 951
sha256: 4781ca0891cd1fd1a21b69d01657ee47d01eafd127c710385247dd1abb4b96b2
key: b5a80ff97552cf32
signed-utc: 2026-12-02T00:48:45+00:00
signature: ry2uJhnT4dm+QghlMo3gaJzMU/WPMN3qNlDDPY/ZYSSCkthj9zWuo1THFsOCoqeoqxDTzr/TZIrgryyBlT2VAA==
