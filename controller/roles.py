"""Who may ask for what: one table of permissions, the policy around it, and the refusal codes (SEC-01, SEC-02).

:data:`PERMISSIONS` is data: for every action a person can ask of the rig, which
:class:`~controller.audit.Role` may ask for it and what extra confirmation a high-risk
request needs. The controller's front door (:meth:`controller.assembly.Controller.act`)
checks every request against it with :func:`refusals`, before anything changes; the
signature checks (:mod:`controller.signing`) take the roles that may sign a prescription,
the drug library or the trust store from the same table.

High risk (SEC-02): a discontinue, a taper, a procedure's hold (zero flow or the minimum rate,
SAFE-05), and a titration or flex programme that overrides a soft limit. Under the default :class:`SecurityPolicy` such a request is taken
only as a signed command (:func:`controller.signing.sign_command`), which authenticates
the person again for that one request; with ``dual_sign_off`` it also needs the signature
of a second person who holds a permitted role.

Scopes: ``controller`` actions are workflows of the controller; ``rig`` actions act on the
bench around it (simulated faults, a simulated crash) and are checked at the same door
before the rig carries them out; ``signature`` actions are done by signing a file, and
the table says whose signature the controller accepts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from controller.audit import Role
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_MIN

__all__ = ["PERMISSIONS", "Confirmation", "Permission", "Refusal", "SecurityPolicy", "refusals"]


class Refusal(str, enum.Enum):
    """Why the front door or a signature check refused (reason codes, journalled)."""

    UNKNOWN_ACTION = "UNKNOWN_ACTION"
    ROLE_NOT_PERMITTED = "ROLE_NOT_PERMITTED"
    REAUTHENTICATION_REQUIRED = "REAUTHENTICATION_REQUIRED"
    SECOND_PERSON_REQUIRED = "SECOND_PERSON_REQUIRED"
    # signed files
    UNSIGNED = "UNSIGNED"
    SIGNATURE_MALFORMED = "SIGNATURE_MALFORMED"
    WRONG_KIND = "WRONG_KIND"
    FOR_ANOTHER_FILE = "FOR_ANOTHER_FILE"
    TRUNCATED = "TRUNCATED"
    UTF8_BOM = "UTF8_BOM"
    CRLF_LINE_ENDINGS = "CRLF_LINE_ENDINGS"
    NOT_UTF8 = "NOT_UTF8"
    CONTENT_CHANGED = "CONTENT_CHANGED"
    LIBRARY_MISMATCH = "LIBRARY_MISMATCH"
    # keys
    UNKNOWN_KEY = "UNKNOWN_KEY"
    MALFORMED_KEY = "MALFORMED_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_EXPIRED = "KEY_EXPIRED"
    WRONG_ROLE = "WRONG_ROLE"
    # signed commands
    COMMAND_MALFORMED = "COMMAND_MALFORMED"
    WRONG_CONTROLLER = "WRONG_CONTROLLER"
    REPLAYED_NONCE = "REPLAYED_NONCE"
    COMMAND_EXPIRED = "COMMAND_EXPIRED"
    COMMAND_FROM_FUTURE = "COMMAND_FROM_FUTURE"
    LOCKED_OUT = "LOCKED_OUT"


class Confirmation(enum.Enum):
    """What a high-risk request needs besides the right role."""

    NONE = "none"
    #: Asked again, for this request alone: a signed command (and, with ``dual_sign_off``, a second signer).
    REAUTHENTICATE = "reauthenticate"


@dataclass(frozen=True)
class Permission:
    """One row of the table.

    :ivar roles: the roles that may ask for it (the first is the usual one, a scenario's default).
    :ivar scope: ``controller``, ``rig`` or ``signature`` (see the module docstring).
    :ivar confirmation: what a high-risk request needs.
    :ivar high_risk_when: parameters whose non-empty value makes the request high risk
        (``("*",)``: always high risk).
    """

    roles: tuple[Role, ...]
    scope: str = "controller"
    confirmation: Confirmation = Confirmation.NONE
    high_risk_when: tuple[str, ...] = ()

    def high_risk(self, params: Mapping[str, Any]) -> bool:
        """True if a request with ``params`` needs :attr:`confirmation`."""
        return "*" in self.high_risk_when or any(params.get(name) for name in self.high_risk_when)


_C, _P, _T, _B, _A = Role.CLINICIAN, Role.PATIENT, Role.PUMP_TECHNICIAN, Role.BENCH_ENGINEER, Role.ADMINISTRATOR
_REAUTH = Confirmation.REAUTHENTICATE

#: Every action a person may ask of the rig, and who may (SEC-01). Nothing else is permitted.
PERMISSIONS: Mapping[str, Permission] = MappingProxyType({
    "screening_dose": Permission((_C,)),
    "implant": Permission((_C,)),
    "configure_patient_bolus": Permission((_C,)),
    "titrate": Permission((_C,), confirmation=_REAUTH, high_risk_when=("override_reason",)),
    "flex": Permission((_C,), confirmation=_REAUTH, high_risk_when=("override_reason",)),
    "clinician_bolus": Permission((_C,)),
    "prime": Permission((_C,)),
    "patient_bolus": Permission((_P,)),
    "refill": Permission((_T, _C)),
    "acknowledge_alarms": Permission((_C,)),
    "resume": Permission((_C,)),
    "taper": Permission((_C,), confirmation=_REAUTH, high_risk_when=("*",)),
    "discontinue": Permission((_C,), confirmation=_REAUTH, high_risk_when=("*",)),
    "begin_procedure": Permission((_C,), confirmation=_REAUTH, high_risk_when=("*",)),
    "end_procedure": Permission((_C,)),
    "fault": Permission((_B,), scope="rig"),
    "clear_fault": Permission((_B,), scope="rig"),
    "restart_controller": Permission((_B,), scope="rig"),
    "sign_prescription": Permission((_C,), scope="signature"),
    "sign_drug_library": Permission((_A,), scope="signature"),
    "manage_keys": Permission((_A,), scope="signature"),
})


@dataclass(frozen=True)
class SecurityPolicy:
    """How strict the front door is (a rig or clinic setting; units in names).

    :ivar signed_high_risk: high-risk requests only as signed commands (re-authentication, SEC-02).
    :ivar dual_sign_off: high-risk signed commands also need a second signer of a permitted role.
    :ivar max_command_age_ms: a signed command older than this is refused (a session's lifetime), ms.
    :ivar max_clock_skew_ms: a signed command stamped this far ahead of the controller is refused, ms.
    :ivar lockout_after_failures: failed authentications of one key within the window that lock it out.
    :ivar lockout_window_ms: the window those failures are counted over, ms.
    :ivar lockout_ms: how long a locked-out key is refused, ms.
    """

    signed_high_risk: bool = True
    dual_sign_off: bool = False
    max_command_age_ms: int = 5 * MS_PER_MIN
    max_clock_skew_ms: int = 1 * MS_PER_MIN
    lockout_after_failures: int = 5
    lockout_window_ms: int = 15 * MS_PER_MIN
    lockout_ms: int = 15 * MS_PER_MIN

    def __post_init__(self) -> None:
        for name in ("signed_high_risk", "dual_sign_off"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false")
        for name in ("max_command_age_ms", "max_clock_skew_ms", "lockout_window_ms", "lockout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1000 <= value <= 24 * 60 * MS_PER_MIN:
                raise ConfigError(name, value, "an integer in [1000, 86400000] ms")
        count = self.lockout_after_failures
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
            raise ConfigError("lockout_after_failures", count, "an integer in [1, 100]")


def refusals(action: str, role: Role, params: Mapping[str, Any], *, signers: int, policy: SecurityPolicy,
             scope: str = "controller") -> tuple[Refusal, ...]:
    """Why a request may not pass the door (empty: it may), from :data:`PERMISSIONS` alone.

    :param action: the action asked for.
    :param role: the role it is asked under.
    :param params: its parameters (they decide whether it is high risk).
    :param signers: distinct people whose signatures on this request verified (0 for a local request).
    :param policy: the rig's policy.
    :param scope: the scope the caller serves (an action of another scope is unknown to it).
    """
    permission = PERMISSIONS.get(action)
    if permission is None or permission.scope != scope:
        return (Refusal.UNKNOWN_ACTION,)
    if role not in permission.roles:
        return (Refusal.ROLE_NOT_PERMITTED,)
    if permission.confirmation is Confirmation.REAUTHENTICATE and permission.high_risk(params):
        if policy.signed_high_risk and signers < 1:
            return (Refusal.REAUTHENTICATION_REQUIRED,)
        if policy.dual_sign_off and signers < 2:
            return (Refusal.SECOND_PERSON_REQUIRED,)
    return ()
