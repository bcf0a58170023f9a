"""Registry errors (under the project's root ``ModelstreamError``).

::

    ModelstreamError
    └── RegistryError          a record on model.events that is not a model event, or the topic
        │                      cannot be read or written
        └── TransitionRefused  a transition the current state does not allow (promote a
                               rejected version, roll back with no previous champion, ...)
"""

from __future__ import annotations

from ..runtime.errors import ModelstreamError

__all__ = ["RegistryError", "TransitionRefused"]


class RegistryError(ModelstreamError):
    """model.events cannot be read or written, or holds something that is not a model event."""


class TransitionRefused(RegistryError):
    """The registry's current state does not allow the requested transition."""
