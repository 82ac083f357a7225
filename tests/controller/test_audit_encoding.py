"""The journal's canonical JSON and entry hash against the standard library's own encoding.

The chain must hash the same bytes in every version (an older journal still verifies), so
the oracle is ``json.dumps`` with the canonical options, written out here, and SHA-256 of it.
"""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from controller.audit import CHAINED_FIELDS, canonical_json, entry_hash, one_shot_encoder, row_hash

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_PLAIN = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT
_VALUES = st.recursive(_PLAIN, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                       max_leaves=12)


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@given(_VALUES)
def test_canonical_json_is_the_standard_encoding_with_sorted_keys(value: object) -> None:
    assert canonical_json(value) == _dumps(value)


@given(st.fixed_dictionaries({name: _PLAIN for name in CHAINED_FIELDS}), st.dictionaries(_TEXT, _PLAIN, max_size=3))
def test_entry_hash_is_sha256_of_the_chained_fields_only(fields: dict[str, object], extra: dict[str, object]) -> None:
    chained = {name: fields[name] for name in CHAINED_FIELDS}
    expected = hashlib.sha256(_dumps(chained).encode("ascii")).hexdigest()
    assert entry_hash({**extra, **fields}) == expected


@given(st.fixed_dictionaries({name: _PLAIN for name in CHAINED_FIELDS}))
def test_row_hash_is_sha256_of_the_canonical_json_of_the_fields_in_chained_order(fields: dict[str, object]) -> None:
    """The journal hashes a row's values directly (no dict, no encoder pass); same bytes as the oracle."""
    expected = hashlib.sha256(_dumps(fields).encode("ascii")).hexdigest()
    assert row_hash([fields[name] for name in CHAINED_FIELDS]) == expected


_FLOATS = st.floats(allow_nan=True, allow_infinity=True)
_LINE_VALUES = st.recursive(_PLAIN | _FLOATS, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=12)


@given(_LINE_VALUES)
def test_a_one_shot_encoder_writes_what_its_encoder_writes(value: object) -> None:
    for options in ({"sort_keys": True, "separators": (",", ":")}, {"default": str, "ensure_ascii": False}):
        encoder = json.JSONEncoder(check_circular=False, **options)
        assert one_shot_encoder(encoder)(value) == encoder.encode(value)


def test_an_encoder_that_checks_for_cycles_or_indents_is_used_as_it_is() -> None:
    for encoder in (json.JSONEncoder(), json.JSONEncoder(check_circular=False, indent=2)):
        assert one_shot_encoder(encoder) == encoder.encode
