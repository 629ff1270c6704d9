"""GET /metrics in the Prometheus text format, from the app's own registry."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.auth import bearer
from service.deps import StateDep
from service.errors import AuthenticationError
from service.schemas import ErrorOut

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"model": ErrorOut}},
)
def metrics(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Response:
    """Open unless M4V_METRICS_TOKEN is set; then the scraper sends it as a Bearer token."""
    token = state.settings.metrics_token
    if token is not None:
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise AuthenticationError(
                "GET /metrics needs the metrics token as 'Authorization: Bearer <token>'"
            )
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
