itb-signature/1
kind: drug-library
file: drug-library.toml
size: 1960
sha256: e3f452f411ad937d20b31961be72d88350c8ebe5c7ec1e389763685164700bd1
key: 0756fbcded3bd1c9
signed-utc: 2026-12-02T00:48:35+00:00
signature: WdimWbFPb2axh5/E0MwceGZqKI8UUxIqJCfIeG6YQXi79BbyEEINyo/09wCvQ2IBWNfu/NU1FKEHUijwLuCZDA==
