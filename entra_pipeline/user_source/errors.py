"""What the MDM user source raises on purpose (besides Graph's and the warehouse's errors)."""

from __future__ import annotations

from entra_pipeline.errors import PipelineError


class UserSourceError(PipelineError):
    """The user source cannot do what its options ask (names the option and what is allowed)."""
