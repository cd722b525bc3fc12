"""Helpers the integration and e2e tests share: an API client and polling."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx


class Api:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def create(self, body: dict[str, Any]) -> httpx.Response:
        return self.http.post("/v1/images/generations", json=body, headers=self.headers)

    def get(self, generation_id: str) -> httpx.Response:
        return self.http.get(f"/v1/images/generations/{generation_id}", headers=self.headers)

    def wait(self, generation_id: str, statuses: set[str], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(generation_id).json()
            if record["status"] in statuses:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"{generation_id} still {record['status']} after {timeout}s")
            time.sleep(0.1)


def sim(stack_env: dict[str, str]) -> httpx.Client:
    """A client for the fal simulator's own control endpoints (it serves its own CA)."""
    trust = ssl.create_default_context(cafile=stack_env["SSL_CERT_FILE"])
    return httpx.Client(base_url=stack_env["FAL_SIM_URL"], verify=trust, timeout=10.0)
