"""The watchdog's ingest of a result whose webhook never came: whether it downloads the
images while claiming the part (as fal's webhook does) or only once it holds the claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagegen import ingest as ingest_module
from imagegen.fal_gateway import FalState, FalStatus
from imagegen.ingest import Collaborators, Outcome
from imagegen.models.records import Generation, GenerationPart, PartStatus
from imagegen.settings import Settings
from imagegen.watchdog import Verdict, WatchdogCheck, run_check

NOW = datetime.now(UTC)


def generation(status: PartStatus, claim_expires_at: datetime | None) -> Generation:
    part = GenerationPart(
        index=0,
        num_images=1,
        first_image=0,
        status=status,
        fal_request_id="req-1",
        claim_id="w1" if claim_expires_at else None,
        claim_expires_at=claim_expires_at,
    )
    return Generation(
        id="gen-1",
        user_id="user-a",
        prompt="a fox",
        model="flux-dev",
        fal_app="fal-ai/flux/dev",
        parameters={},
        num_images=1,
        width=1024,
        height=1024,
        parts=[part],
        created_at=NOW,
        updated_at=NOW,
    )


class Repo:
    def __init__(self, record: Generation) -> None:
        self.record = record

    def get(self, generation_id: str) -> Generation:
        return self.record


class Gateway:
    def status(self, app: str, request_id: str) -> FalStatus:
        return FalStatus(FalState.COMPLETED)

    def result(self, app: str, request_id: str) -> dict[str, Any]:
        return {"images": [{"url": "https://v3.fal.media/files/x.jpg"}], "seed": 1}


@pytest.mark.parametrize(
    ("status", "expires", "prefetch"),
    [
        (PartStatus.SUBMITTED, None, True),  # the webhook was lost: nobody copies
        (PartStatus.INGESTING, NOW - timedelta(seconds=1), True),  # its copier died
        (PartStatus.INGESTING, NOW + timedelta(minutes=1), False),  # a copy is under way
    ],
)
def test_the_watchdog_downloads_while_claiming_unless_a_copy_is_under_way(
    monkeypatch: pytest.MonkeyPatch, status: PartStatus, expires: datetime | None, prefetch: bool
) -> None:
    calls: list[dict[str, Any]] = []

    def ingest(*args: Any, **kwargs: Any) -> Outcome:
        calls.append(kwargs)
        return Outcome.COMPLETED_PART

    monkeypatch.setattr(ingest_module, "ingest", ingest)
    repo = Repo(generation(status, expires))
    verdict = run_check(
        WatchdogCheck(generation_id="gen-1", part=0, fal_request_id="req-1"),
        Collaborators(repo, None, None),  # type: ignore[arg-type]
        Gateway(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        Settings(),
    )
    assert verdict is Verdict.INGESTED
    assert calls == [{"prefetch": prefetch}]
