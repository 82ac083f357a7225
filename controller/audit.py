"""Who did what: actors, roles and the hash chain behind the journal's audit trail.

Every journal entry carries an :class:`Actor` (a name and a :class:`Role`,
SEC-01, PER-04). Entries are chained: each entry's hash covers its own fields
and the hash of the entry before it, so an edit, a deletion or a reordering
breaks the chain at a known sequence number (PER-03). The chain code here is
pure (no I/O) so the journal, the verifier and the tests share one definition.

::

    genesis = sha256("itb-journal-genesis:" + journal_id + ":" + journal metadata)
    hash[n] = sha256(canonical_json(entry[n] fields, prev_hash = hash[n-1]))
"""

from __future__ import annotations

import enum
import hashlib
import json
import json.encoder
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cython_ext.errors import ConfigError

#: Length of a hex SHA-256 digest, characters.
HASH_HEX_CHARS = 64


class Role(enum.Enum):
    """Roles that may act on the controller (SEC-01); :data:`controller.roles.PERMISSIONS` says who may do what.

    SEC-01 names five roles of a clinical pump; on this rig they are spelled once, here:
    its *prescriber* is the clinician (prescriptions and titration), its *clinician* the
    clinician or the pump technician (refill, confirmations), its *pharmacist* the
    administrator (drug library, keys), its *service* role the pump technician and the bench
    engineer (devices, simulators, faults).
    """

    PATIENT = "patient"
    CLINICIAN = "clinician"
    PUMP_TECHNICIAN = "pump_technician"
    BENCH_ENGINEER = "bench_engineer"
    ADMINISTRATOR = "administrator"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """A person or the controller itself, as recorded in the audit trail.

    :param name: identifier of the person or component (non-empty, no surrounding spaces).
    :param role: the role under which the action is taken.
    :raises ConfigError: for an empty name or a role that is not a :class:`Role`.
    """

    name: str
    role: Role

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise ConfigError("actor.name", self.name, "a non-empty string without surrounding spaces")
        if not isinstance(self.role, Role):
            raise ConfigError("actor.role", self.role, f"one of {[r.value for r in Role]}")

    def __str__(self) -> str:
        return f"{self.name} ({self.role.value})"


#: The controller acting on its own behalf (alarms it raises, commands it sends).
SYSTEM_ACTOR = Actor("controller", Role.SYSTEM)


def _jsonable(value: Any) -> Any:
    """Turn ``value`` into plain JSON types, exactly (Decimals become strings, enums their values)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN_TYPES else _jsonable(v)
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN_TYPES else _jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        raise ConfigError("journal.payload", value, "free of floats (use int fixed point or Decimal)")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes_hex": bytes(value).hex()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    raise ConfigError("journal.payload", type(value).__name__, "JSON-representable data")


def one_shot_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """``encoder.encode``, with the C encoder it builds at every call built once (the same text).

    ``JSONEncoder.encode`` makes a new C encoder object per call, which costs as much as
    encoding a small dict. For an encoder without indentation or circular-reference checks
    (whose state would outlive a failed call) the C encoder is made here, once; otherwise,
    or without the C accelerator, ``encoder.encode`` itself is returned.
    """
    make = json.encoder.c_make_encoder
    if make is None or encoder.indent is not None or encoder.check_circular:
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    chunks = make(None, encoder.default, strings, None, encoder.key_separator, encoder.item_separator,
                  encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda value: "".join(chunks(value, 0))


#: The encoder behind :func:`canonical_json`, built once: ``json.dumps`` with these options builds a new
#: encoder at every call, which costs twice the encoding of a reading.
_CANONICAL = one_shot_encoder(
    json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, check_circular=False))
#: Types that :func:`_jsonable` returns unchanged.
_PLAIN_TYPES = frozenset((str, int, bool, type(None)))


def canonical_json(value: Any, *, plain: bool = False) -> str:
    """Deterministic JSON text of ``value``: sorted keys, no spaces, no floats.

    :param value: plain data (dict, list, str, int, bool, None, Decimal, Enum, bytes).
    :param plain: ``value`` is already plain JSON data (what :func:`jsonable` returns, nested in
        dicts and lists): it is encoded without being converted again.
    :return: the canonical text, identical for equal inputs.
    :raises ConfigError: if ``value`` holds a float or a type with no JSON form.
    """
    return _CANONICAL(value if plain else _jsonable(value))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data, as :func:`canonical_json` encodes it (Decimals become strings...).

    :raises ConfigError: if ``value`` holds a float or a type with no JSON form.
    """
    return _jsonable(value)


def genesis_hash(journal_id: str, *context: str) -> str:
    """The ``prev_hash`` of the first entry of the journal named ``journal_id``.

    :param journal_id: the journal's unique ID.
    :param context: further journal metadata bound into the chain (creation time, format...),
        so damage to it breaks the chain like damage to an entry.
    """
    material = ":".join(("itb-journal-genesis", journal_id, *context))
    return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


#: The entry fields covered by the hash, in a fixed order.
CHAINED_FIELDS: tuple[str, ...] = (
    "seq",
    "kind",
    "action",
    "utc",
    "utc_offset_min",
    "monotonic_ns",
    "actor",
    "role",
    "command_id",
    "outcome",
    "reason",
    "old_json",
    "new_json",
    "prev_hash",
)


def entry_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of one journal entry.

    :param fields: a mapping holding every name in :data:`CHAINED_FIELDS`
        (``prev_hash`` is the hash of the previous entry, or the genesis hash).
    :return: 64 hex characters.
    :raises KeyError: if a chained field is missing.
    """
    return row_hash([fields[name] for name in CHAINED_FIELDS])


#: Positions of :data:`CHAINED_FIELDS` in sorted name order, each with the JSON text before its value.
_SORTED_FIELDS = tuple(
    (("{" if rank == 0 else ",") + json.encoder.encode_basestring_ascii(name) + ":", CHAINED_FIELDS.index(name))
    for rank, name in enumerate(sorted(CHAINED_FIELDS)))
_escape = json.encoder.encode_basestring_ascii


def row_hash(values: Sequence[Any]) -> str:
    """:func:`entry_hash` of the chained fields given as values in :data:`CHAINED_FIELDS` order.

    The canonical JSON of an entry whose fields are all strings, integers and None is written
    out at once (the same text the canonical encoder gives: sorted keys, ASCII escapes); any
    other value goes through :func:`canonical_json`.
    """
    parts = []
    for prefix, index in _SORTED_FIELDS:
        value = values[index]
        kind = type(value)
        if kind is str:
            parts.append(prefix + _escape(value))
        elif kind is int:
            parts.append(prefix + int.__repr__(value))
        elif value is None:
            parts.append(prefix + "null")
        else:
            parts = [canonical_json(dict(zip(CHAINED_FIELDS, values)))]
            break
    else:
        parts.append("}")
    return hashlib.sha256("".join(parts).encode("ascii")).hexdigest()
