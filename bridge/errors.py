"""The bridge's error tree.

BridgeError
├── ConfigurationError          settings that cannot run
├── RequestError                cannot do what was asked; `param` names the field at fault
│   ├── ValidationError         bad input (API: 422)
│   ├── NotFound                no such object for this organization (API: 404)
│   ├── Conflict                the request clashes with the state (API: 409)
│   └── Forbidden               the actor may not do this (API: 403)
└── SendError                   a send to Twilio did not succeed
    ├── TransientSendError      retry later (429, 5xx, timeouts, retryable codes)
    └── PermanentSendError      never retry (invalid number, blocked, ...)
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigurationError(BridgeError):
    """The settings cannot run."""


class RequestError(BridgeError):
    """What was asked cannot be done; `message` says why and `param` names the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ValidationError(RequestError):
    """Input that breaks a rule."""


class NotFound(RequestError):
    """No such object, or it belongs to another organization."""


class Conflict(RequestError):
    """The request clashes with the current state."""


class Forbidden(RequestError):
    """The acting subscriber may not do this."""


class SendError(BridgeError):
    """A send to Twilio did not succeed; `code` is Twilio's error code when it gave one."""

    retryable = False

    def __init__(
        self,
        reason: str,
        code: int | None = None,
        status: int | None = None,
        may_have_sent: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status
        # True when the request may have reached Twilio (a read timeout): before sending again,
        # ask Twilio whether the SMS went, as for a delivery a killed worker left `sending`.
        self.may_have_sent = may_have_sent


class TransientSendError(SendError):
    """Worth retrying later: rate limited, Twilio or the network failed."""

    retryable = True


class PermanentSendError(SendError):
    """Retrying cannot help: the number is invalid, blocked, or the request is wrong."""

    retryable = False
