"""Cloud Tasks: delayed, retried HTTP calls to the watchdog function.

Task names make creation idempotent (a redelivered dispatcher schedules the same check
once); the task carries an OIDC token for the watchdog's own service identity, so only
Cloud Tasks can call it. Locally the client talks to gcloud-tasks-emulator over an insecure
channel.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from imagegen.settings import Settings

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def task_id(*parts: object) -> str:
    """A task id from its parts: only the characters Cloud Tasks allows, at most 500."""
    return _NAME_CHARS.sub("-", "-".join(str(p) for p in parts))[:500]


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def _tasks(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import tasks_v2

                host = self._settings.tasks_emulator_host
                if host:
                    import grpc
                    from google.cloud.tasks_v2.services.cloud_tasks.transports import (
                        CloudTasksGrpcTransport,
                    )

                    transport = CloudTasksGrpcTransport(channel=grpc.insecure_channel(host))
                    self._client = tasks_v2.CloudTasksClient(transport=transport)
                else:
                    self._client = tasks_v2.CloudTasksClient()
            return self._client

    def enqueue(self, name: str, url: str, payload: dict[str, Any], delay_seconds: float) -> bool:
        """Creates the task; False if a task of that name exists already (a duplicate)."""
        from google.api_core.exceptions import AlreadyExists

        # proto-plus turns a datetime into the Timestamp field.
        schedule = datetime.now(UTC) + timedelta(seconds=delay_seconds)
        http_request: dict[str, Any] = {
            "http_method": "POST",
            "url": url,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(payload).encode(),
        }
        if self._settings.watchdog_invoker:
            http_request["oidc_token"] = {
                "service_account_email": self._settings.watchdog_invoker,
                "audience": url.split("?")[0],
            }
        task = {
            "name": f"{self._settings.tasks_queue}/tasks/{name}",
            "schedule_time": schedule,
            "http_request": http_request,
        }
        try:
            self._tasks().create_task(parent=self._settings.tasks_queue, task=task)
        except AlreadyExists:
            return False
        return True
