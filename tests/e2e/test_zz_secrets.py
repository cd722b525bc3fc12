"""Secrets never appear in logs, errors or records.

Named to run last among the e2e tests: by then the session's stack has served every other
scenario (generations, faults, webhooks, watchdog, errors), all logged to its logs/ dir.
"""

from __future__ import annotations

import pytest

from imagegen import clients
from infra.stack import LocalStack

pytestmark = pytest.mark.e2e
COLLECTIONS = (
    "generations",
    "falRequests",
    "apiKeys",
    "loras",
    "usage",
    "userLimits",
    "idempotencyKeys",
    "batches",
    "deletedGenerations",
)


def _secrets(stack: LocalStack) -> dict[str, str]:
    found = {name: stack.env[name] for name in ("FAL_KEY", "WEBHOOK_HMAC_KEY")}
    assert found["FAL_KEY"].startswith("fal-canary-")  # the canary is really in use
    assert len(found["WEBHOOK_HMAC_KEY"]) >= 16
    return found


def test_no_secret_in_any_process_log(stack: LocalStack) -> None:
    logs = sorted((stack.state_dir / "logs").glob("*.log"))
    assert {"api.log", "dispatcher.log", "webhook.log", "watchdog.log"} <= {p.name for p in logs}
    for name, value in _secrets(stack).items():
        for path in logs:
            assert value not in path.read_text(errors="replace"), f"{name} leaked into {path.name}"


def test_no_secret_in_any_record(stack: LocalStack, stack_env) -> None:
    db = clients.firestore_client()
    documents = [
        str(d.to_dict()) for c in COLLECTIONS for d in db.collection(c).limit(500).stream()
    ]
    assert documents, "the session should have written records by now"
    for name, value in _secrets(stack).items():
        assert not any(value in text for text in documents), f"{name} stored in a record"
