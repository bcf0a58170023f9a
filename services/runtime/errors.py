"""The exception hierarchy.

::

    ModelstreamError
    ├── ConfigError            settings that cannot work (bad URL, unknown service)
    ├── StackError             the embedded broker or Valkey did not start or answer
    ├── ModelLoadError         an artifact is missing, corrupt, fails its checksum or its card
    └── DecodeError            a payload that is not a valid event (carries a reason code)
        └── ValidationError    a decoded event that breaks its feature spec

Bad input on a topic never raises out of a service: ``DecodeError`` and ``ValidationError``
become dead-letter records carrying their ``reason`` and ``detail``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "ModelLoadError",
    "ModelstreamError",
    "StackError",
    "ValidationError",
]


class ModelstreamError(Exception):
    """Root of every error modelstream raises on purpose."""


class ConfigError(ModelstreamError):
    """Settings that cannot work."""


class StackError(ModelstreamError):
    """The embedded broker or Valkey did not start, or a server did not answer."""


class ModelLoadError(ModelstreamError):
    """A model artifact that cannot be served: missing, corrupt, wrong checksum, bad card."""


class DecodeError(ModelstreamError):
    """A payload that is not an event. ``reason`` is a stable code for the dead-letter topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ValidationError(DecodeError):
    """An event that decoded but breaks the feature spec of its model."""
