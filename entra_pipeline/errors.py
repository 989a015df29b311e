"""The root of every error the pipeline raises on purpose: a message a user can act on.

Each layer derives its own (ConfigError, EntraError, MappingInvalid, ModelError, WarehouseError),
so a caller can tell the pipeline's errors from bugs with one `except PipelineError`.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the pipeline detected and explains; never a secret in the message."""
