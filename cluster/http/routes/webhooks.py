"""``/v1/webhook-secret``: the key an owner's completion webhooks are signed with."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter

from catalog.webhooks import owner_secret
from cluster.http.dependencies import Reader, Service
from cluster.http.models import AUTH_ERRORS, WebhookSecret
from cluster.http.webhook_rules import SIGNATURE_HEADER

router = APIRouter(tags=["webhooks"], responses=AUTH_ERRORS)


@router.get("/v1/webhook-secret", response_model=WebhookSecret, operation_id="getWebhookSecret",
            summary="The secret your completion webhooks are signed with (made on first use)",
            response_description="the secret and how it signs")
async def webhook_secret(principal: Reader, service: Service) -> WebhookSecret:
    secret = await to_thread.run_sync(owner_secret, service.engine, principal.owner)
    return WebhookSecret(secret=secret, header=SIGNATURE_HEADER)
