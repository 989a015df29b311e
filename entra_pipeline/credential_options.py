"""The credentials of a connector config's app registrations: the sync's certificate
(`client_certificate`), and the `actions:` options (docs/actions.md) — the action credential, an
app registration of its own which the sync never uses, the actions it may take, and the limits
every plan is held to."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from entra_pipeline.credentials import CertificateCredential, load_certificate_credential
from entra_pipeline.secrets import register_secret
from entra_pipeline.vocabulary import ACTION_NAMES, is_guid


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ClientCertificate(_Strict):
    """The app registration's certificate credential: a PEM private key with its PEM certificate,
    or one PKCS#12 (.pfx) file holding both; `passphrase` when the key is encrypted."""

    private_key_path: str | None = None
    certificate_path: str | None = None
    pfx_path: str | None = None
    passphrase: SecretStr | None = None
    _credential: CertificateCredential | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _loads(self) -> ClientCertificate:
        passphrase = self.passphrase.get_secret_value() if self.passphrase else None
        credential = load_certificate_credential(
            private_key_path=self.private_key_path,
            certificate_path=self.certificate_path,
            pfx_path=self.pfx_path,
            passphrase=passphrase,
        )
        register_secret(credential.private_key_pem)
        self._credential = credential
        return self

    @property
    def credential(self) -> CertificateCredential:
        assert self._credential is not None  # set by validation
        return self._credential


def msal_credential(
    secret: SecretStr | None, certificate: ClientCertificate | None
) -> str | dict[str, str]:
    """What MSAL authenticates an app registration with: its client secret, or its certificate's
    key and certificate (exactly one is set: the models' validators see to it)."""
    if certificate is not None:
        return certificate.credential.msal_credential()
    assert secret is not None
    return secret.get_secret_value()


class ActionOptions(_Strict):
    # The action app registration: its client id and its credential, a client secret (from the
    # environment, like the sync's: client_secret: ${ENTRA_ACTION_CLIENT_SECRET}) or a
    # certificate (client_certificate, as the sync's), exactly one of them.
    client_id: str
    client_secret: SecretStr | None = None
    client_certificate: ClientCertificate | None = None
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
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
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

    @model_validator(mode="after")
    def _one_credential(self) -> ActionOptions:
        if (self.client_secret is None) == (self.client_certificate is None):
            raise ValueError(
                "give the action app's credential: client_secret (e.g. client_secret: "
                "${ENTRA_ACTION_CLIENT_SECRET}) or client_certificate, exactly one of them"
            )
        return self

    def client_credential(self) -> str | dict[str, str]:
        """What MSAL authenticates the action app with: its secret, or its certificate."""
        return msal_credential(self.client_secret, self.client_certificate)

    def credential_description(self) -> str:
        if self.client_certificate is not None:
            return "the action app's " + self.client_certificate.credential.describe()
        return "the action app's client secret (actions.client_secret)"
