"""The drug library as a signed file: the exact text of the limits the safety kernel enforces (SEC-04).

The kernel holds the drug library (``DEFAULT_LIBRARY``: each entry's hard and soft bounds).
:func:`render` writes it as one deterministic TOML text; an administrator signs that text
(``drug-library.toml`` with its ``.sig`` in the rig's security directory), and
:func:`require_signed` refuses to build a controller whose kernel library is not, byte for
byte, the signed one. A change of the library in the code therefore needs an
administrator's signature before any rig runs it. Bounds are ``[lower_hard, lower_soft,
upper_soft, upper_hard]`` in the unit in each key's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controller.roles import Refusal
from controller.signing import RigSecurity, SignatureError

#: Bounds of each entry, in file order: file key -> DrugLimits field.
_BOUNDS = (
    ("concentration_ug_per_ml", "concentration"),
    ("dose_ng_per_day", "dose_ng_per_day"),
    ("rate_nl_per_h", "rate_nl_per_h"),
    ("bolus_ng", "bolus_ng"),
    ("bolus_lockout_ms", "bolus_lockout_ms"),
    ("boluses_per_day", "boluses_per_day"),
)


def render(library: Mapping[Any, Any]) -> str:
    """The library's text: one ``[[entry]]`` per kernel ``DrugLimits``, in order of concentration.

    :param library: the kernel's library (``kernel.DEFAULT_LIBRARY``), keyed by concentration, µg/mL.
    """
    out = ["# The drug library the safety kernel enforces: hard and soft bounds of every entry,",
           "# [lower_hard, lower_soft, upper_soft, upper_hard] in the unit of each key's name.",
           "# Signed by an administrator; a rig runs only the library signed here.",
           'schema = "itb.drug-library/1"', ""]
    for concentration in sorted(library):
        entry = library[concentration]
        out += ["[[entry]]", f"code = {json.dumps(entry.code)}", f"name = {json.dumps(entry.name, ensure_ascii=True)}",
                f"nominal_concentration_ug_per_ml = {entry.concentration_ug_per_ml}",
                f"screening_only = {'true' if entry.screening_only else 'false'}"]
        for key, name in _BOUNDS:
            out.append(f"{key} = [{', '.join(str(int(v)) for v in getattr(entry, name))}]")
        out.append("")
    return "\n".join(out)


def kernel_library() -> Mapping[Any, Any]:
    """The library the selected safety kernel enforces (``DEFAULT_LIBRARY``)."""
    from cython_ext import kernel

    return kernel.DEFAULT_LIBRARY


def require_signed(security: RigSecurity, library: Mapping[Any, Any]) -> None:
    """Refuse a kernel library that is not exactly the rig's signed one.

    :param security: the rig's verified security material (its library signature is checked on load).
    :param library: the library the kernel will enforce.
    :raises SignatureError: LIBRARY_MISMATCH, naming the first line that differs.
    """
    expected = render(library)
    signed = security.library.text
    if signed == expected:
        return
    ours, theirs = expected.splitlines(), signed.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    raise SignatureError(Refusal.LIBRARY_MISMATCH, f"drug library {security.directory / security.library.name}",
                         f"the kernel's library differs from the signed one at line {line + 1}; an administrator "
                         "must sign the library the code enforces (itb keys sign-library)")
