"""The error hierarchy of cloudnic. Every class carries its CNI error code.

This is the lowest layer: every other package may import it, it imports nothing
of cloudnic. Messages say what went wrong, on which object, and what the user can
do; ``details`` carries the technical cause (an errno text, a server reply).
"""

from __future__ import annotations

import errno as _errno
import os


class CNIError(Exception):
    """An error that becomes a CNI error object ``{cniVersion, code, msg, details}``."""

    code = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}

    def __str__(self) -> str:
        return f"{self.msg} ({self.details})" if self.details else self.msg


class IncompatibleVersion(CNIError):
    code = 1


class UnsupportedField(CNIError):
    code = 2


class UnknownContainer(CNIError):
    code = 3


class InvalidEnvironment(CNIError):
    code = 4


class IOFailure(CNIError):
    code = 5


class DecodeFailure(CNIError):
    code = 6


class InvalidConfig(CNIError):
    code = 7


class TryAgainLater(CNIError):
    code = 11


class NotAvailable(CNIError):
    """STATUS: the plugin cannot service ADD."""

    code = 50


class NotAvailableDegraded(CNIError):
    """STATUS: cannot service ADD and existing containers may be affected."""

    code = 51


# ---- cloudnic's own codes (>= 100) --------------------------------------------------


class AddressUnavailable(CNIError):
    """A requested address is outside its subnet, excluded, or held by someone else.

    ``holder`` is the id of the port holding it, when known, so that the agent can tell a
    live pod's port from a stale one of its own.
    """

    code = 100

    def __init__(self, msg: str, details: str = "", holder: str = "") -> None:
        super().__init__(msg, details)
        self.holder = holder


class AddressExhausted(CNIError):
    """No free address in the subnet(s) that may serve this request."""

    code = 101


class NotFound(CNIError):
    """A network, subnet, port or other named object does not exist."""

    code = 102


class ProviderError(CNIError):
    """The IaaS provider refused or failed a request in a way retrying will not fix."""

    code = 103


class DataplaneError(CNIError):
    """The kernel refused a dataplane change."""

    code = 104


class CheckFailed(CNIError):
    """CHECK found the attachment differs from what ADD made."""

    code = 105


class InternalError(CNIError):
    """A bug: an unexpected exception inside the agent."""

    code = 999


GONE_ERRNOS = frozenset({_errno.ENOENT, _errno.ENODEV, _errno.ESRCH, _errno.ENXIO})


def is_gone(exc: BaseException) -> bool:
    """True when a kernel error on delete/lookup means "the object is already gone"."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code in GONE_ERRNOS:
        return True
    err = getattr(exc, "errno", None)
    return isinstance(err, int) and err in GONE_ERRNOS


def from_errno(err: int, what: str, hint: str = "") -> CNIError:
    """Translate an errno met at the kernel boundary into a CNI error naming ``what``."""
    text = _errno.errorcode.get(err, str(err))
    desc = f"{text}: {os.strerror(err)}"
    if err in (_errno.EAGAIN, _errno.EBUSY, _errno.ETIMEDOUT, _errno.ENOBUFS, _errno.EINTR):
        return TryAgainLater(f"{what}: kernel busy, retry{'; ' + hint if hint else ''}", desc)
    if err in (_errno.EEXIST, _errno.ENOTUNIQ):
        return DataplaneError(f"{what}: already exists{'; ' + hint if hint else ''}", desc)
    if err in GONE_ERRNOS:
        return NotFound(f"{what}: not found{'; ' + hint if hint else ''}", desc)
    if err in (_errno.EPERM, _errno.EACCES):
        return DataplaneError(f"{what}: permission denied (the agent must run as root)", desc)
    if err == _errno.EINVAL:
        return DataplaneError(f"{what}: the kernel rejected the request as invalid{'; ' + hint if hint else ''}", desc)
    if err in (_errno.EOPNOTSUPP, _errno.ENOTSUP):
        return DataplaneError(f"{what}: not supported by this kernel{'; ' + hint if hint else ''}", desc)
    return DataplaneError(f"{what}: failed{'; ' + hint if hint else ''}", desc)
