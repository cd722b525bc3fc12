"""The webhook function on the running stack: only fal's signature gets in, and a
delivery that arrives twice stores its images once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.falsim.signing import load_private_key, sign_webhook
from tests.support import Api, SimConfig, wait_sim_request, wait_sim_requests_for

pytestmark = pytest.mark.e2e


def _submitted_without_webhook(
    api: Api, fal_sim: httpx.Client, sim_config: SimConfig, body: dict
) -> tuple[str, dict]:
    """A generation fal has finished but whose webhook never came; returns (id, sim request)."""
    sim_config.set(webhook="none")
    generation_id = api.generate(body)
    api.wait(generation_id, {"submitted"})
    [request] = wait_sim_requests_for(fal_sim, generation_id)
    finished = wait_sim_request(
        fal_sim, request["request_id"], lambda r: r["status"] == "COMPLETED"
    )
    return generation_id, finished


def _webhook_body(fal_sim: httpx.Client, sim_request: dict) -> bytes:
    output = fal_sim.get(sim_request["response_url"], headers={"Authorization": "Key sim-key"})
    assert output.status_code == 200, output.text
    return json.dumps(
        {
            "request_id": sim_request["request_id"],
            "gateway_request_id": sim_request["request_id"],
            "status": "OK",
            "payload": output.json(),
            "error": None,
        }
    ).encode()


def _deliver(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers={**headers, "Content-Type": "application/json"})


def test_the_same_signed_webhook_twice_stores_images_once(
    api: Api, fal_sim, sim_config, stack_env, images_bucket
) -> None:
    generation_id, sim_request = _submitted_without_webhook(
        api,
        fal_sim,
        sim_config,
        {"prompt": "delivered twice", "numImages": 3, "imageSize": "square"},
    )
    body = _webhook_body(fal_sim, sim_request)
    key = load_private_key(Path(stack_env["FAL_SIM_PRIVATE_KEY_FILE"]))
    headers = sign_webhook(key, sim_request["request_id"], "sim-user", body)

    first = _deliver(sim_request["webhook_url"], body, headers)
    assert first.status_code == 200 and first.json()["status"] == "completed_part"
    completed = api.get(generation_id).json()
    assert completed["status"] == "completed"

    second = _deliver(sim_request["webhook_url"], body, headers)
    assert second.status_code == 200 and second.json()["status"] == "duplicate"

    after = api.get(generation_id).json()
    assert [i["path"] for i in after["images"]] == [i["path"] for i in completed["images"]]
    assert after["completedAt"] == completed["completedAt"]
    prefix = f"generations/{api.user_id}/{generation_id}/"
    stored = list(images_bucket.list_blobs(prefix=prefix))
    assert len(stored) == 3


def test_webhook_without_the_signed_url_is_found_by_fal_request_id(
    api: Api, fal_sim, sim_config, stack_env
) -> None:
    generation_id, sim_request = _submitted_without_webhook(
        api, fal_sim, sim_config, {"prompt": "plain url"}
    )
    body = _webhook_body(fal_sim, sim_request)
    key = load_private_key(Path(stack_env["FAL_SIM_PRIVATE_KEY_FILE"]))
    response = _deliver(
        stack_env["WEBHOOK_URL"],
        body,
        sign_webhook(key, sim_request["request_id"], "sim-user", body),
    )
    assert response.status_code == 200 and response.json()["status"] == "completed_part"
    assert api.get(generation_id).json()["status"] == "completed"


@pytest.mark.parametrize("forgery", ["unsigned", "foreign_key", "tampered_body", "stale"])
def test_forged_webhook_is_refused_and_changes_nothing(
    api: Api, fal_sim, sim_config, stack_env, images_bucket, forgery
) -> None:
    generation_id, sim_request = _submitted_without_webhook(
        api, fal_sim, sim_config, {"prompt": "forged"}
    )
    body = _webhook_body(fal_sim, sim_request)
    sim_key = load_private_key(Path(stack_env["FAL_SIM_PRIVATE_KEY_FILE"]))
    request_id = sim_request["request_id"]
    if forgery == "unsigned":
        headers = {}
    elif forgery == "foreign_key":
        headers = sign_webhook(Ed25519PrivateKey.generate(), request_id, "sim-user", body)
    elif forgery == "tampered_body":
        headers = sign_webhook(sim_key, request_id, "sim-user", body)
        body = body.replace(b'"status": "OK"', b'"status":  "OK"')
    else:
        headers = sign_webhook(
            sim_key, request_id, "sim-user", body, timestamp=int(time.time()) - 301
        )
    before = api.get(generation_id).json()

    response = _deliver(sim_request["webhook_url"], body, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"]
    assert api.get(generation_id).json() == before
    prefix = f"generations/{api.user_id}/{generation_id}/"
    assert not list(images_bucket.list_blobs(prefix=prefix))


def test_the_same_signed_webhook_twice_at_once_stores_images_once(
    api: Api, fal_sim, sim_config, stack_env, images_bucket
) -> None:
    """Both deliveries download while claiming the part; only the claim's holder stores."""
    generation_id, sim_request = _submitted_without_webhook(
        api, fal_sim, sim_config, {"prompt": "delivered at once", "numImages": 3}
    )
    body = _webhook_body(fal_sim, sim_request)
    key = load_private_key(Path(stack_env["FAL_SIM_PRIVATE_KEY_FILE"]))
    headers = sign_webhook(key, sim_request["request_id"], "sim-user", body)

    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda _: _deliver(sim_request["webhook_url"], body, headers), range(2))
        )
    assert [a.status_code for a in answers] == [200, 200]
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses in (["completed_part", "duplicate"], ["completed_part", "in_progress"])
    completed = api.wait(generation_id, {"completed"})
    assert len(completed["images"]) == 3
    for prefix in ("generations", "thumbnails"):
        stored = list(images_bucket.list_blobs(prefix=f"{prefix}/{api.user_id}/{generation_id}/"))
        assert len(stored) == 3


def test_the_webhooks_of_two_parts_at_once_complete_the_generation(
    api: Api, fal_sim, sim_config, stack_env, images_bucket
) -> None:
    sim_config.set(webhook="none")
    generation_id = api.generate({"prompt": "two parts at once", "numImages": 5})
    api.wait(generation_id, {"submitted"})
    requests = wait_sim_requests_for(fal_sim, generation_id, count=2)
    key = load_private_key(Path(stack_env["FAL_SIM_PRIVATE_KEY_FILE"]))
    deliveries = []
    for request in requests:
        finished = wait_sim_request(
            fal_sim, request["request_id"], lambda r: r["status"] == "COMPLETED"
        )
        body = _webhook_body(fal_sim, finished)
        headers = sign_webhook(key, finished["request_id"], "sim-user", body)
        deliveries.append((finished["webhook_url"], body, headers))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda d: _deliver(*d), deliveries))
    assert [a.json()["status"] for a in answers] == ["completed_part", "completed_part"]
    completed = api.get(generation_id).json()
    assert completed["status"] == "completed"
    paths = [image["path"] for image in completed["images"]]
    assert [path.rsplit("/", 1)[1].split(".")[0] for path in paths] == ["0", "1", "2", "3", "4"]
    stored = list(images_bucket.list_blobs(prefix=f"thumbnails/{api.user_id}/{generation_id}/"))
    assert len(stored) == 5
