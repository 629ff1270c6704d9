"""GET /webhook-secret: the secrets that sign the caller's webhooks (m4v_core/webhooks.py SigningSecrets).

Each API key has its own signing secret (derived from M4V_WEBHOOK_SECRET, or configured), so a tenant can
verify its webhooks and nobody else's. During a rotation two are listed, current first, and every webhook
carries a signature from each. Open mode has no tenants: its webhooks are signed with the operator's shared
secret, which this route never shows.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from service.deps import OwnerDep, StateDep
from service.errors import ServiceError
from service.schemas import ErrorOut

router = APIRouter(tags=["webhooks"])


class WebhookSecretOut(BaseModel):
    key_id: str
    secrets: list[str]  # whsec_<base64>, current first; verify with any (Standard Webhooks)


class NoWebhookSecretError(ServiceError):
    status_code = 404
    error_type = "not_found"


@router.get("/webhook-secret", response_model=WebhookSecretOut, responses={404: {"model": ErrorOut}})
def webhook_secret(owner: OwnerDep, state: StateDep) -> WebhookSecretOut:
    if owner is None:
        raise NoWebhookSecretError("open mode: webhooks are signed with the operator's M4V_WEBHOOK_SECRET")
    secrets = state.webhooks.secrets.for_owner(owner)
    if not secrets:
        raise NoWebhookSecretError("no webhook signing secret is configured: webhooks are not sent")
    return WebhookSecretOut(key_id=owner, secrets=secrets)
