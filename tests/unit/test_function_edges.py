"""The deployable entry points, driven through functions-framework's own test client.

Only paths that need no backend run here (transport parsing, authentication refusals,
health); the same functions with real backends are covered by the e2e tests.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from functions_framework import create_app

from imagegen import clients, context
from imagegen.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def offline_settings(monkeypatch: pytest.MonkeyPatch):
    # A closed port: any attempt to reach a backend would fail loudly, not silently pass.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("FAL_JWKS_URL", "http://127.0.0.1:9/jwks.json")
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", "k" * 32)
    caches = [get_settings, clients.firestore_client, context.api_keys, context.webhook_verifier]
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


def _client(name: str, signature_type: str):
    app = create_app(name, str(ROOT / "functions" / name / "main.py"), signature_type)
    return app.test_client()


def _pubsub_event(data: bytes | str) -> CloudEvent:
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/p/topics/generation-requests",
        },
        {
            "message": {"data": data, "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"},
            "subscription": "projects/p/subscriptions/s",
        },
    )


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(json.dumps({"somethingElse": 1}).encode()).decode(),
        base64.b64encode(json.dumps({"generationId": ""}).encode()).decode(),
    ],
)
@pytest.mark.parametrize("mode", [to_binary, to_structured])
def test_dispatcher_acknowledges_messages_it_can_never_understand(data, mode) -> None:
    headers, body = mode(_pubsub_event(data))
    response = _client("dispatcher", "cloudevent").post("/", headers=headers, data=body)
    # 2xx acknowledges: redelivering a message that can never parse would loop forever.
    assert response.status_code == 200


def test_dispatcher_acknowledges_an_event_without_a_message() -> None:
    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/x",
        },
        {"unexpected": True},
    )
    headers, body = to_binary(event)
    assert (
        _client("dispatcher", "cloudevent").post("/", headers=headers, data=body).status_code == 200
    )


@pytest.mark.parametrize(("name", "signature"), [("api", "http"), ("webhook", "http")])
def test_http_functions_answer_health(name: str, signature: str) -> None:
    response = _client(name, signature).get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_unsigned_webhook_is_refused_before_any_key_is_fetched() -> None:
    response = _client("webhook", "http").post("/", json={"request_id": "r", "status": "OK"})
    # 401, not 503: the JWKS URL is unreachable, so reaching it would have failed differently.
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_header"


def test_api_refuses_missing_credentials_as_json() -> None:
    response = _client("api", "http").post("/v1/images/generations", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_credentials"


@pytest.mark.parametrize("path", ["/v1/images/generations/a%0Ab", "/%0A", "/robots.txt"])
def test_paths_the_framework_refuses_get_the_apis_json_error(path: str) -> None:
    # functions-framework's own router (`/<path:path>`) takes no newline: Flask answered
    # these with an HTML page before the function ran (found by `make fuzz`).
    response = _client("api", "http").get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "not_found"
