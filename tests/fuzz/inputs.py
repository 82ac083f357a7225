"""What the fuzz suite feeds the loaders and the ``itb`` parser: documents, mutations, odd values.

The TOML here is written by :func:`write_toml`, a writer of this suite's own (independent
of the loaders), which records the line it puts every key on: the oracle for the line
numbers the field kit reports.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    "prescription": sorted((ROOT / "hil" / "prescriptions").glob("*.toml")),
    "scenario": sorted((ROOT / "hil" / "scenarios").glob("*.toml")),
    "profile": sorted((ROOT / "hil" / "profiles").glob("*.toml")),
    "population": sorted((ROOT / "hil" / "cohorts").glob("*.toml")),
}
SHIPPED_BYTES = {kind: [p.read_bytes() for p in paths] for kind, paths in SHIPPED.items()}
#: Inputs fed in this run, by what they were fed to (reported at the end of the run).
FED: Counter[str] = Counter()


@dataclass(frozen=True)
class Raw:
    """A TOML value written exactly as this text (``0x10``, ``nan``, ``[[[1]]]``)."""

    text: str


#: Number literals the number policy has an opinion on, and ones beyond every range.
ODD_NUMBERS = [
    "1e999999", "-1e999999", "1e-999999", "1e-1999999", "0x10", "0o17", "0b101", "1_6", "1_000.5", "-0", "-0.0",
    "+0", "16.0", "nan", "+inf", "-inf", "9" * 40, "0." + "0" * 36 + "1", "1" * 41, "-1", "0", "2003.001",
    "99999999999999999999", "1e30", "0.0000001", "4.699", "24", "1440", "1E+3", "007",
]
#: Strings a clinician must not be shown as an identity, and strings beyond every length.
ODD_STRINGS = [
    "", " ", " padded ", "RX-0001", "dr.jones", "Р-0001",  # Cyrillic Р, looks like P
    "dr.jоnes",  # Cyrillic о
    "患者-1", "🙂", "A\u202eB", "a\u200bb", "x\ny", "x\u0000y", "é", "ＲＸ", "x" * 201, "x" * 10_001, "\\", "'",
    "0.048", "1e999999", "spinal", "simple", "synchromed-ii-20", "baclofen-it-500", "0d 09:00", "99d 25:61",
    "lost-reply:match=RUN", "delay:s=1e308", "stall:at=1e308", "0.5mL/h", "120min", "14.5mm", "bd-10ml",
]
_KEYS = [
    "schema_version", "prescription_id", "prescriber", "patient", "drug", "pump", "programme", "titration",
    "clinician_bolus", "patient_bolus", "soft_limit_overrides", "id", "origin", "library_code",
    "concentration_ug_per_ml", "model", "reservoir_volume_ml", "dead_volume_ml", "mode", "dose_ug_per_day", "steps",
    "start_min", "end_min", "enabled", "max_dose_ug", "lockout_min", "max_per_day", "scenario", "name",
    "duration_days", "seed", "prescription", "therapy", "action", "expect", "at", "do", "check", "faults",
    "reservoir_ml", "bias_pct", "accuracy", "rate", "syringe", "url", "baudrate", "water", "temperature_c", "test",
    "size", "origins", "spinal", "weight_kg", "parameters", "distribution", "median", "sigma_log", "min", "max",
    "x", "a-b", "0",
]


def toml_key(key: str) -> str:
    """``key`` as a TOML key: bare where it can be, quoted otherwise."""
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """One TOML value (inline)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML basic-string escapes here
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_toml(doc: Mapping[str, Any]) -> tuple[str, dict[tuple[str | int, ...], int]]:
    """A TOML document and the 1-based line of every key, table and array-of-tables item it wrote.

    Top-level and table scalars become ``key = value`` lines, a mapping a ``[table]`` and a
    list of mappings an array of ``[[tables]]``; everything deeper is written inline. Places
    are tuples of keys and array indices: ``("action", 2, "at")``.
    """
    lines: list[str] = []
    where: dict[tuple[str | int, ...], int] = {}

    def table(body: Mapping[str, Any], place: tuple[str | int, ...], header: tuple[str, ...]) -> None:
        for key, value in body.items():
            if not _is_section(value):
                where.setdefault((*place, key), len(lines) + 1)
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in body.items():
            name = ".".join(toml_key(part) for part in (*header, key))
            if isinstance(value, Mapping):
                where.setdefault((*place, key), len(lines) + 1)
                lines.append(f"[{name}]")
                table(value, (*place, key), (*header, key))
            elif _is_section(value):
                for index, item in enumerate(value):
                    where.setdefault((*place, key), len(lines) + 1)
                    where[(*place, key, index)] = len(lines) + 1
                    lines.append(f"[[{name}]]")
                    table(item, (*place, key, index), (*header, key))

    table(doc, (), ())
    return "\n".join(lines) + "\n", where


def _is_section(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value))


keys = st.sampled_from([*_KEYS, "", " ", "\x1f", "a.b", "é", "[", "x" * 65])
scalars = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=8),
    st.sampled_from(ODD_NUMBERS).map(Raw),
    st.integers(-10**6, 10**6).map(lambda n: Raw(f"{n / 1000:.3f}")),
    st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"]).map(Raw),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(keys, scalars, max_size=2))
#: Where an entry goes: the top level, a table, or the last table of an array of tables.
_PLACES = ["", "", "pump", "scenario", "programme", "water", "[[action]]", "[[soft_limit_overrides]]"]
_entries = st.lists(st.tuples(st.sampled_from(_PLACES), keys, values), max_size=10)


def _document(entries: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """A document from (place, key, value) entries; an entry whose place is taken by a value is dropped."""
    doc: dict[str, Any] = {}
    for place, key, value in entries:
        if not place:
            doc[key] = value
        elif place.startswith("[["):
            items = doc.setdefault(place.strip("[]"), [{}])
            if isinstance(items, list) and items and isinstance(items[-1], dict):
                if key in items[-1]:
                    items.append({})
                items[-1][key] = value
        elif isinstance(doc.setdefault(place, {}), dict):
            doc[place][key] = value
    return doc


#: Whole documents: top-level keys, tables and arrays of tables of odd values, under known and odd keys.
documents = _entries.map(_document)

#: Values that stress the limits: deep, long, many.
huge_values = st.one_of(
    st.integers(10, 40).map(lambda n: Raw("[" * n + "1" + "]" * n)),
    st.integers(10, 40).map(lambda n: Raw("{a = " * n + "1" + "}" * n)),
    st.integers(900, 1100).map(lambda n: Raw("[" + ", ".join("1" for _ in range(n)) + "]")),
    st.integers(9_990, 10_010).map(lambda n: "x" * n),
    st.integers(35, 45).map(lambda n: Raw("1" * n)),
    st.integers(1, 5000).map(lambda n: Raw("9" * n)),
)



@dataclass(frozen=True)
class Edit:
    """One edit of a file, placed by a fraction of its length so that one recipe fits every file.

    :ivar op: ``flip`` a byte, ``cut`` bytes, ``insert`` bytes, ``repeat`` a line, or put a
        ``value`` in place of an assignment's value.
    :ivar where: position, as a fraction of the file's length (or of its assignments).
    :ivar payload: the byte, the length, the bytes, the repeat count or the value.
    """

    op: str
    where: float
    payload: Any


_INSERTS = [b"[", b"]", b"{", b"=", b'"', b"'''", b"\n[[action]]\n", b"\xff\xfe", b".", b"#", b"\\u", b"\r", b"\x00"]
edits = st.one_of(
    st.builds(Edit, st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.builds(Edit, st.just("cut"), st.floats(0, 1), st.integers(1, 40)),
    st.builds(Edit, st.just("insert"), st.floats(0, 1), st.one_of(st.binary(max_size=8), st.sampled_from(_INSERTS))),
    st.builds(Edit, st.just("repeat"), st.floats(0, 1), st.integers(1, 3)),
    st.builds(Edit, st.just("value"), st.floats(0, 1), st.one_of(scalars, huge_values)),
)
#: A few edits, applied to every shipped file of a kind by :func:`apply`.
recipes = st.lists(edits, min_size=1, max_size=4)


def apply(recipe: list[Edit], original: bytes) -> bytes:
    """``original`` with every edit of ``recipe`` made, in order."""
    data = bytearray(original)
    for edit in recipe:
        at = min(int(edit.where * len(data)), max(0, len(data) - 1))
        if edit.op == "flip" and data:
            data[at] = edit.payload
        elif edit.op == "cut":
            del data[at:at + edit.payload]
        elif edit.op == "insert":
            data[at:at] = edit.payload
        elif edit.op == "repeat":
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at) + 1 or len(data)
            data[end:end] = data[start:end] * edit.payload
        elif edit.op == "value":
            lines = data.split(b"\n")
            assignments = [i for i, line in enumerate(lines) if b"=" in line and not line.lstrip().startswith(b"#")]
            if assignments:
                i = assignments[min(int(edit.where * len(assignments)), len(assignments) - 1)]
                key = lines[i].split(b"=", 1)[0]
                lines[i] = key + b"= " + toml_value(edit.payload).encode("utf-8", "surrogatepass")
                data = bytearray(b"\n".join(lines))
    return bytes(data)
