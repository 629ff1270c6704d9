"""m4v_core/ssrf.py: the webhook SSRF guard resolves once, checks every address, connects to the one checked.

The resolver is injected (WebhookSender(resolver=...), PinnedTransport(resolver=...)): a DNS server that
rebinds is played by RebindingResolver, nothing patches sockets globally.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook

from m4v_core import JobStore
from m4v_core.ssrf import PinnedTransport, WebhookRefusedError, check_url
from m4v_core.webhooks import WebhookSender
from tests.webhook_receiver import Receiver
from tests.worker.jobs_helpers import make_job
from worker.metrics import WorkerMetrics

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PUBLIC = "93.184.215.14"  # a public address; unit tests never connect to it (httpx.MockTransport)


class RebindingResolver:
    """A hostile DNS server: answers `answers[i]` to the i-th lookup (the last one from then on)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.lookups: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_url), prefix=key_prefix)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def make_sender(store: JobStore, resolver: RebindingResolver, **kwargs: object) -> WebhookSender:
    defaults: dict[str, object] = {"retry_delays_s": [0.0], "jitter": 0.0, "timeout_s": 2.0}
    defaults.update(kwargs)
    return WebhookSender(store.r, store, SECRET, resolver=resolver, **defaults)  # type: ignore[arg-type]


# --- check_url ---
@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/x",
        "http://localhost:8080/x",
        "ftp://e.com/",
    ],
)
def test_check_url_refuses_private_link_local_and_loopback(url: str) -> None:
    with pytest.raises(WebhookRefusedError):
        check_url(url, allow_hosts=[])


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("100.64.0.10", True),  # shared address space (RFC 6598), e.g. a Redis behind carrier NAT
        ("100.100.100.200", True),  # a cloud metadata service in 100.64/10
        ("169.254.169.254", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("0.0.0.0", True),
        ("192.0.2.1", True),  # documentation
        ("198.18.0.1", True),  # benchmarking
        ("240.0.0.1", True),  # reserved
        ("224.0.1.1", True),  # multicast
        ("::1", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("2001:db8::1", True),  # documentation
        ("::ffff:100.64.0.1", True),  # v4-mapped shared address
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_only_global_unicast_addresses_may_receive_webhooks(address: str, blocked: bool) -> None:
    url = f"http://[{address}]/hook" if ":" in address else f"http://{address}/hook"
    if blocked:
        with pytest.raises(WebhookRefusedError):
            check_url(url, allow_hosts=[])
    else:
        assert check_url(url, allow_hosts=[]) == [address]


def test_a_refusal_does_not_tell_the_tenant_what_an_internal_name_resolves_to() -> None:
    with pytest.raises(WebhookRefusedError) as refused:
        check_url("http://billing.internal/hook", resolver=lambda host, port: ["10.20.30.40"])
    assert "10.20.30.40" not in str(refused.value) and "billing.internal" in str(refused.value)


def test_check_url_allows_listed_hosts() -> None:
    assert check_url("http://localhost:8080/x", allow_hosts=["localhost"])
    assert check_url("http://10.0.0.1/x", allow_hosts=["10.0.0.1"]) == ["10.0.0.1"]
    assert check_url("http://127.0.0.1:1/x", allow_hosts=["127.0.0.1"]) == ["127.0.0.1"]
    assert check_url(f"https://{PUBLIC}/hook", allow_hosts=[]) == [PUBLIC]  # literal: no DNS lookup


def test_check_url_refuses_a_name_with_any_non_public_address() -> None:
    resolver = RebindingResolver([PUBLIC, "169.254.169.254"])
    with pytest.raises(WebhookRefusedError) as refused:
        check_url("http://hooks.example/x", resolver=resolver)
    assert refused.value.address == "169.254.169.254" and "169.254" not in str(refused.value)
    assert resolver.lookups == [("hooks.example", 80)]


# --- PinnedTransport: the request the connection layer gets ---
def pinned_client(resolver: RebindingResolver, seen: list[httpx.Request]) -> httpx.Client:
    def inner(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    transport = PinnedTransport(resolver=resolver, inner=httpx.MockTransport(inner))
    return httpx.Client(transport=transport, follow_redirects=False)


def test_transport_connects_to_the_checked_address_not_to_a_later_answer() -> None:
    resolver = RebindingResolver([PUBLIC], ["127.0.0.1"])
    seen: list[httpx.Request] = []
    with pinned_client(resolver, seen) as client:
        client.post("http://hooks.example:8080/hook", content=b"{}")
        assert [str(r.url) for r in seen] == [f"http://{PUBLIC}:8080/hook"]
        assert seen[0].headers["host"] == "hooks.example:8080"
        assert "sni_hostname" not in seen[0].extensions
        assert len(resolver.lookups) == 1  # one lookup for check and connection alike
        with pytest.raises(WebhookRefusedError) as refused:
            client.post("http://hooks.example:8080/hook", content=b"{}")  # the rebound answer
        assert refused.value.address == "127.0.0.1"
    assert len(seen) == 1


def test_https_request_keeps_host_and_sni_of_the_name() -> None:
    seen: list[httpx.Request] = []
    with pinned_client(RebindingResolver([PUBLIC]), seen) as client:
        client.post("https://Hooks.Example/hook", content=b"{}", timeout=3.0)
        client.post("https://hooks.example:8443/hook", content=b"{}")
    assert [str(r.url) for r in seen] == [f"https://{PUBLIC}/hook", f"https://{PUBLIC}:8443/hook"]
    assert [r.headers["host"] for r in seen] == ["hooks.example", "hooks.example:8443"]
    assert [r.extensions["sni_hostname"] for r in seen] == ["hooks.example", "hooks.example"]
    assert seen[0].extensions["timeout"]["connect"] == 3.0  # the client's timeouts still apply
    assert seen[0].content == b"{}"


def test_transport_tries_the_next_checked_address_when_a_connect_fails() -> None:
    second = "93.184.215.15"

    def inner(request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(204)

    transport = PinnedTransport(
        resolver=RebindingResolver([PUBLIC, second]), inner=httpx.MockTransport(inner)
    )
    with httpx.Client(transport=transport) as client:
        response = client.post("http://hooks.example/hook", content=b"{}")
    assert response.status_code == 204 and response.request.url.host == "hooks.example"


def test_default_transport_opens_a_fresh_connection_per_request() -> None:
    """The pool is keyed by the pinned IP: a kept-alive connection, TLS-verified for one name, must not carry
    a request for another name served from the same address. So the default transport keeps none."""
    peers: list[int] = []

    class KeepAliveHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # would keep the connection open for the next request

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers["content-length"]))
            peers.append(self.client_address[1])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    resolver = RebindingResolver(["127.0.0.1"])
    try:
        with httpx.Client(transport=PinnedTransport(["127.0.0.1"], resolver=resolver)) as client:
            for name in ("a.test", "b.test"):
                client.post(f"http://{name}:{server.server_address[1]}/hook", content=b"{}")
    finally:
        server.shutdown()
        server.server_close()
    assert len(peers) == 2 and len(set(peers)) == 2


# --- WebhookSender end to end, real receiver on 127.0.0.1 ---
def test_rebinding_to_the_listening_receiver_never_reaches_it(
    store: JobStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The check sees an allow-listed address with nothing listening, later lookups the receiver's."""
    caplog.set_level(logging.WARNING, logger="m4v_core.ssrf")
    resolver = RebindingResolver(["127.0.0.2"], ["127.0.0.1"])
    job = make_job(webhook_url=f"http://rebind.test:{receiver.port}/hook")
    store.create(job)
    metrics = WorkerMetrics()
    sender = make_sender(store, resolver, allow_hosts=["127.0.0.2"], metrics=metrics)
    sender.submit(job, "completed")
    assert sender.deliver_due() == 1  # attempt 1: pinned to 127.0.0.2, connection refused
    assert sender.deliver_due() == 1  # attempt 2: the rebound answer 127.0.0.1 is refused
    sender.close()
    assert receiver.deliveries == []
    assert len(resolver.lookups) == 2  # one lookup per attempt
    first, second = store.get(job.id).webhook_deliveries
    assert first.error is not None and first.error.startswith("ConnectError")
    assert second.error is not None and second.error.startswith("refused") and "127.0.0.1" not in second.error
    assert [getattr(r, "address", None) for r in caplog.records if r.name == "m4v_core.ssrf"] == ["127.0.0.1"]
    assert metrics.sample("m4v_webhook_deliveries_total", {"outcome": "refused"}) == 1


def test_allow_listed_loopback_name_is_delivered_with_its_host_header(
    store: JobStore, receiver: Receiver
) -> None:
    resolver = RebindingResolver(["127.0.0.1"])
    job = make_job(webhook_url=f"http://hooks.test:{receiver.port}/hook")
    store.create(job)
    sender = make_sender(store, resolver, allow_hosts=["127.0.0.1"])
    sender.submit(job, "started")
    sender.deliver_due()
    sender.close()
    assert [a.ok for a in store.get(job.id).webhook_deliveries] == [True]
    ((headers, body),) = receiver.deliveries
    assert headers["host"] == f"hooks.test:{receiver.port}"
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.started"


def tls_contexts(name: str, tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for the name `name` only: (server context, client context trusting it)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, ssl.create_default_context(cadata=cert_pem.decode())


@pytest.mark.parametrize("cert_name", ["hooks.test", "other.test"])
def test_https_delivery_to_a_pinned_address_verifies_the_certificate_for_the_name(
    store: JobStore, tmp_path: Path, cert_name: str
) -> None:
    """Connected to 127.0.0.1, the TLS name is still hooks.test: SNI, certificate check, Host header."""
    server_tls, client_tls = tls_contexts(cert_name, tmp_path)
    sni_seen: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: sni_seen.append(name)  # type: ignore[assignment]
    tls_receiver = Receiver(tls=server_tls)
    job = make_job(webhook_url=f"https://hooks.test:{tls_receiver.port}/hook")
    store.create(job)
    inner = httpx.HTTPTransport(verify=client_tls)  # the default transport, trusting the test certificate
    sender = make_sender(store, RebindingResolver(["127.0.0.1"]), allow_hosts=["127.0.0.1"], transport=inner)
    try:
        sender.submit(job, "started")
        sender.deliver_due()
    finally:
        sender.close()
        tls_receiver.close()
    (attempt,) = store.get(job.id).webhook_deliveries
    assert sni_seen == ["hooks.test"]
    if cert_name == "hooks.test":
        assert attempt.ok
        assert tls_receiver.deliveries[0][0]["host"] == f"hooks.test:{tls_receiver.port}"
    else:  # a certificate for another name is rejected although the address was allowed
        assert not attempt.ok and attempt.error is not None and "CERTIFICATE_VERIFY_FAILED" in attempt.error
        assert tls_receiver.deliveries == []


def test_a_name_that_does_not_resolve_now_is_retried_not_refused(store: JobStore) -> None:
    """A DNS outage passes: a failed lookup is a transport error (retried with backoff), not a refusal."""

    def down(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    sender = WebhookSender(store.r, store, SECRET, retry_delays_s=[0.0], resolver=down)
    job = make_job(webhook_url="http://hooks.example.test/x")
    store.create(job)
    delivery = sender.submit(job, "completed")
    assert delivery is not None
    assert sender.attempt(delivery) == "retrying"
    record = store.get(delivery.job_id).webhook_deliveries[-1]
    assert record.error is not None and "cannot resolve" in record.error
