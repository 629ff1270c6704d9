"""Request size limits: the body (413, before any parsing) and the prompt's length (422).

LimitBody is pure ASGI (safe around SSE). A body with a Content-Length is judged by the header alone; a
chunked body (no Content-Length) is read up to the limit, then replayed to the app, so a client cannot slip
past the limit by leaving the length out.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m4v_core import ApiSettings, GenerateRequest
from m4v_core.ssrf import HostLookupError, WebhookRefusedError, check_url
from service.errors import InvalidRequestError, PayloadTooLargeError, error_response


class LimitBody:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._reject(int(declared), scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body at all
            await self.app(scope, receive, send)
            return
        buffered, size = await self._read_upto_limit(receive)
        if size > self.max_bytes:
            await self._reject(size, scope, receive, send)
            return
        await self.app(scope, _replay(buffered, receive), send)

    async def _read_upto_limit(self, receive: Receive) -> tuple[list[Message], int]:
        """The body's messages, stopping as soon as more than max_bytes have arrived."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, size
            size += len(message.get("body", b""))
            if size > self.max_bytes or not message.get("more_body", False):
                return messages, size

    async def _reject(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        qualifier = "at least " if b"content-length" not in dict(scope["headers"]) else ""
        error = PayloadTooLargeError(
            f"request body of {qualifier}{size} bytes exceeds {self.max_bytes} bytes",
            details={"limit": self.max_bytes},
        )
        await error_response(error, scope.get("path", ""))(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def check_prompt_limits(req: GenerateRequest, settings: ApiSettings) -> None:
    """422 when prompt or negative_prompt is longer than Settings.max_prompt_chars."""
    limit = settings.max_prompt_chars
    problems = [
        (name, f"{len(text)} characters exceeds the limit of {limit}")
        for name, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt))
        if text is not None and len(text) > limit
    ]
    if problems:
        raise InvalidRequestError.from_fields(problems)


def check_webhook_url(req: GenerateRequest, settings: ApiSettings) -> None:
    """422 for a webhook_url no delivery could ever reach: the delivery-time check (m4v_core/ssrf.py
    check_url, same allow-list) run now with a resolver that knows only literal IPs and localhost. Other names
    are resolved and checked at each delivery, where the DNS answer of that moment counts."""
    if req.webhook_url is None:
        return
    try:
        check_url(str(req.webhook_url), settings.webhook_allow_hosts, _localhost_only)
    except HostLookupError:
        return  # a name: checked when delivered
    except WebhookRefusedError as exc:
        raise InvalidRequestError.from_fields(
            [("webhook_url", f"{exc} (the operator can allow it with M4V_WEBHOOK_ALLOW_HOSTS)")]
        ) from None


def _localhost_only(host: str, port: int) -> list[str]:
    return ["127.0.0.1"] if host == "localhost" or host.endswith(".localhost") else []
