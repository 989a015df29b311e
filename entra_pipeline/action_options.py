"""The `actions:` options of a connector config (docs/actions.md): the action credential — an app
registration of its own, which the sync never uses — which actions it may take, and the limits
every plan is held to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from entra_pipeline.vocabulary import ACTION_NAMES, is_guid


class ActionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # The action app registration: its client id and secret (from the environment, like the
    # sync's: client_secret: ${ENTRA_ACTION_CLIENT_SECRET}).
    client_id: str
    client_secret: SecretStr
    # The actions plans may hold; the app needs each one's permission (check lists them).
    allowed: list[str] = Field(default_factory=lambda: list(ACTION_NAMES))
    # A plan acting on more than this share of the tenant's objects of its kind, or on more than
    # max_objects, is refused whole.
    max_fraction: float = Field(default=0.05, gt=0, le=1)
    max_objects: int = Field(default=500, ge=1)
    # A plan older than this is not applied: the directory has moved on; plan again.
    plan_max_age_hours: float = Field(default=24, gt=0)

    @field_validator("client_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        if not is_guid(value):
            raise ValueError(f"{value!r} is not a GUID (the action app's Application (client) ID)")
        return value

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError(
                "is empty: set it to the action app's client secret (from the environment, e.g. "
                "client_secret: ${ENTRA_ACTION_CLIENT_SECRET})"
            )
        return value

    @field_validator("allowed")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in ACTION_NAMES]
        if unknown:
            raise ValueError(
                f"unknown action(s) {', '.join(map(repr, unknown))}: the actions are "
                f"{', '.join(ACTION_NAMES)}"
            )
        return value
