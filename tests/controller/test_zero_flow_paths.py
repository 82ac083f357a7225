"""SAFE-03, static rule: no code path commands zero flow except the sanctioned ones.

Read from the controller's source (the AST), not from the running code: the pump's ``stop`` is called only by
:meth:`controller.commands.CommandIssuer.send_stop`; ``send_stop`` only by the three loop methods that carry an
authorisation or a fault reaction (the STOP row of the fault-reaction table, an authorised discontinue, a guided
procedure's authorised zero-rate hold, SAFE-05); and each of those only from its one caller. A new caller anywhere
fails this test until it is added here, deliberately.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONTROLLER = Path(__file__).resolve().parents[2] / "controller"

#: Who may call what: the callee's attribute name -> the (module, function) pairs allowed to call it.
ALLOWED_CALLERS = {
    "stop": {("commands", "send_stop")},  # the pump's stop, through the journalled, verified sender
    "send_stop": {("loop", "_stop_for_fault"), ("loop", "discontinue_now"), ("loop", "hold_for_procedure")},
    "_stop_for_fault": {("loop", "_fault")},  # only a STOP row of the fault-reaction table (SAFE-01)
    "discontinue_now": {("therapy", "discontinue")},  # after the kernel authorised the discontinue
    "hold_for_procedure": {("therapy", "begin_procedure")},  # after the kernel authorised the hold
}


def _calls(tree: ast.AST, module: str) -> list[tuple[str, str, str]]:
    """Every ``x.name(...)`` call in ``tree`` as (callee name, module, enclosing function name)."""
    found: list[tuple[str, str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                found.append((child.func.attr, module, function))
            visit(child, function)

    visit(tree, "<module>")
    return found


def _all_calls() -> list[tuple[str, str, str]]:
    calls = []
    for path in sorted(CONTROLLER.rglob("*.py")):
        calls += _calls(ast.parse(path.read_text(encoding="utf-8")), path.stem)
    return calls


@pytest.mark.parametrize("callee", sorted(ALLOWED_CALLERS))
def test_zero_flow_is_commanded_only_from_its_sanctioned_callers(callee: str) -> None:
    callers = {(module, function) for name, module, function in _all_calls() if name == callee}
    assert callers, f"the rule's parse found no call of {callee}: it would pass vacuously"
    assert callers <= ALLOWED_CALLERS[callee], f"{callee} called from {sorted(callers - ALLOWED_CALLERS[callee])}"


def test_the_rule_catches_a_new_caller() -> None:
    rogue = ast.parse("def titrate(self):\n    self.loop.commands.send_stop('why not')\n")
    callers = {(module, function) for name, module, function in _calls(rogue, "therapy") if name == "send_stop"}
    assert not callers <= ALLOWED_CALLERS["send_stop"]
