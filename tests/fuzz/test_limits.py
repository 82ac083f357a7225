"""The input limits (issue #15): each is enforced at its edge, and the work an input costs is linear.

No timeout says that nothing hangs. Instead: every limit of
:data:`~cython_ext.fields.DEFAULT_LIMITS` admits an input at the limit and refuses one just
over it, naming the field; and the work a loader does, counted as the Python calls and
lines it executes (``sys.settrace``, deterministic), grows linearly with the size of the
most expensive input shapes, at a bounded cost per byte, and so does the memory it
allocates (``tracemalloc``). With the size bounded, so are both. (The regular expressions
the scan uses are possessive, so their C-level work is linear too.)
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from cython_ext.errors import ConfigError
from cython_ext.fields import DEFAULT_LIMITS, FileErrors, load_toml
from tests.fuzz.inputs import SHIPPED_BYTES
from tests.fuzz.test_loaders import LOADERS

LIMITS = DEFAULT_LIMITS


def refusal(data: bytes) -> FileErrors | None:
    """The whole-file refusal of ``data`` by the kit, or None if the kit parses it."""
    try:
        load_toml(data, document="doc", source="limits.toml")
    except FileErrors as exc:
        return exc
    return None


#: (what, an input at the limit, the same just over it, the field the refusal names).
EDGES: list[tuple[str, bytes, bytes, str]] = [
    ("file size", b"#" * (LIMITS.file_bytes - 1) + b"\n", b"#" * LIMITS.file_bytes + b"\n", "doc"),
    ("array nesting", b"a = " + b"[" * (LIMITS.depth - 1) + b"1" + b"]" * (LIMITS.depth - 1),
     b"a = " + b"[" * LIMITS.depth + b"1" + b"]" * LIMITS.depth, "a" + "[0]" * LIMITS.depth),
    ("inline-table nesting", b"a = " + b"{b = " * (LIMITS.depth - 1) + b"1" + b"}" * (LIMITS.depth - 1),
     b"a = " + b"{b = " * LIMITS.depth + b"1" + b"}" * LIMITS.depth, "a" + ".b" * LIMITS.depth),
    ("dotted key", b".".join([b"a"] * LIMITS.depth) + b" = 1", b".".join([b"a"] * (LIMITS.depth + 1)) + b" = 1",
     ".".join(["a"] * (LIMITS.depth + 1))),
    ("array length", b"a = [" + b"1," * LIMITS.array_items + b"]", b"a = [" + b"1," * (LIMITS.array_items + 1) + b"]",
     "a"),
    ("array of tables", b"[[a]]\n" * LIMITS.array_items, b"[[a]]\n" * (LIMITS.array_items + 1), "a"),
    ("entries", b"".join(b"k%d = 1\n" % i for i in range(LIMITS.entries)),
     b"".join(b"k%d = 1\n" % i for i in range(LIMITS.entries + 1)), f"k{LIMITS.entries}"),
    ("string length", b'a = "' + b"x" * LIMITS.string_chars + b'"', b'a = "' + b"x" * (LIMITS.string_chars + 1) + b'"',
     "a"),
    ("key length", b"k" * LIMITS.key_chars + b" = 1", b"k" * (LIMITS.key_chars + 1) + b" = 1", "key"),
    ("number length", b"a = " + b"9" * LIMITS.number_chars, b"a = " + b"9" * (LIMITS.number_chars + 1), "a"),
]


@pytest.mark.parametrize(("at_limit", "over_limit", "field"), [e[1:] for e in EDGES], ids=[e[0] for e in EDGES])
def test_each_limit_admits_its_edge_and_refuses_one_more(at_limit: bytes, over_limit: bytes, field: str) -> None:
    assert refusal(at_limit) is None
    refused = refusal(over_limit)
    assert refused is not None and refused.field == field, refused
    assert "must be" in str(refused)
    assert refused.errors[0].line is not None or field == "doc"  # a file too large is refused unread


def test_a_file_reports_at_most_the_error_limit_and_counts_the_rest() -> None:
    text = "[scenario]\n" + "".join(f"k{i} = 1\n" for i in range(LIMITS.errors + 20))
    with pytest.raises(FileErrors) as excinfo:
        LOADERS["scenario"][0](text.encode())
    assert len(excinfo.value.errors) == LIMITS.errors
    assert excinfo.value.omitted >= 20


def work(load: Callable[[bytes], Any], data: bytes) -> int:
    """Python calls and lines executed while ``load`` reads ``data`` (deterministic, unlike time)."""
    events = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal events
        events += 1
        return trace

    sys.settrace(trace)
    try:
        load(data)
    except ConfigError:
        pass
    finally:
        sys.settrace(None)
    return events


def _repeat(unit: Callable[[int], bytes], size: int) -> bytes:
    out, i = bytearray(), 0
    while len(out) < size:
        out += unit(i)
        i += 1
    return bytes(out[:size])


#: The input shapes that cost the most per byte, built to a size.
SHAPES: dict[str, Callable[[int], bytes]] = {
    "many keys": lambda n: _repeat(lambda i: b"k%d = 1\n" % i, n),
    "many tables": lambda n: _repeat(lambda i: b"[t%d]\nx = 'y'\n" % i, n),
    "actions": lambda n: b'[scenario]\nname = "x"\n' + _repeat(
        lambda i: b'[[action]]\nat = "0d 09:00"\ndo = "patient_bolus"\nlabel = "a%d"\n' % i, n),
    "long strings": lambda n: _repeat(lambda i: b'k%d = "%s"\n' % (i, b"x" * 1000), n),
    "shipped scenario, repeated": lambda n: _repeat(lambda i: SHIPPED_BYTES["scenario"][1], n),
    "comments": lambda n: _repeat(lambda i: b"# %d\n" % i, n),
}
#: Work per byte a loader may spend, and the constant (imports aside) of reading any file.
WORK_PER_BYTE, WORK_CONSTANT = 40, 60_000
#: Peak memory per byte a loader may allocate, and the constant.
MEMORY_PER_BYTE, MEMORY_CONSTANT = 200, 4_000_000
SMALL, LARGE = 4_000, 16_000


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_work_grows_linearly_with_the_input(kind: str, shape: str) -> None:
    load = LOADERS[kind][0]
    work(load, SHAPES[shape](SMALL))  # the first read of a shape warms caches (the drug library, regexes)
    small, large = work(load, SHAPES[shape](SMALL)), work(load, SHAPES[shape](LARGE))
    assert large <= WORK_PER_BYTE * LARGE + WORK_CONSTANT, (small, large)
    assert large <= 1.25 * (LARGE / SMALL) * small + WORK_CONSTANT, (small, large)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_memory_is_bounded_by_the_input(shape: str) -> None:
    data = SHAPES[shape](LARGE)
    for load, _ in LOADERS.values():
        tracemalloc.start()
        try:
            load(data)
        except ConfigError:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak <= MEMORY_PER_BYTE * len(data) + MEMORY_CONSTANT, peak
