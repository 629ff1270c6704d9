"""The playground's routes (the page itself is driven in a real browser: tests/e2e/test_playground.py),
the switch that turns it off, and CORS for browser clients on other origins."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from m4v_core import Settings
from service.app import create_app

ORIGIN = "https://app.example"


def test_root_redirects_to_the_playground_and_its_files_and_options_are_served(
    client: TestClient, settings: Settings
) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/playground/"
    page = client.get("/playground/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # every script and stylesheet the page loads is served by the API itself (no CDN)
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert {"app.js", "style.css", "vendor/hls.min.js"} <= set(assets)
    for asset in assets:
        assert "//" not in asset
        assert client.get(f"/playground/{asset}").status_code == 200
    options = client.get("/playground/options").json()
    assert options["preset"] == "tiny"
    assert options["resolutions"] == [{"width": 128, "height": 128}]
    assert (options["default_frames"] - 1) % options["frame_multiple"] == 0
    assert options["auth_mode"] == settings.auth_mode  # the page asks for a key only when keys are on


def test_playground_off_serves_nothing(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"playground": False}))) as c:
        assert c.get("/", follow_redirects=False).status_code == 404
        assert c.get("/playground/").status_code == 404
        assert c.get("/playground/options").status_code == 404


def test_no_cors_headers_unless_origins_are_configured(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


def test_cors_preflight_and_errors_for_a_configured_origin(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": [ORIGIN], "auth_mode": "keys"}))
    with TestClient(app) as c:
        preflight = c.options(
            "/generate",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        # the 401 a browser client gets without a key is readable by its page
        denied = c.post("/generate", json={"prompt": "x"}, headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN
        other = c.options(
            "/generate", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"
