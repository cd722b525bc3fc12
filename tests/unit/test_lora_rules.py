"""LoRA URL forms, signed-URL resolution and trigger-word injection (seed 000)."""

from __future__ import annotations

import pytest

from imagegen.loras import GcsLocation, check_url, fetchable_url, gcs_location, with_triggers


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example.com/loras/john.safetensors", None),
        ("http://example.com/a.safetensors", None),
        (
            "gs://other-bucket/people/john.safetensors",
            GcsLocation("other-bucket", "people/john.safetensors"),
        ),
        ("lora1.safetensors", GcsLocation("lora-bucket", "lora1.safetensors")),
        ("/people/lora1.safetensors", GcsLocation("lora-bucket", "people/lora1.safetensors")),
    ],
)
def test_the_three_url_forms(url: str, expected: GcsLocation | None) -> None:
    assert gcs_location(url, "lora-bucket") == expected
    assert check_url(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "gs://bucket-only",
        "gs://",
        "https://",
        "../secrets/key",
        "people/../../x",
        "//host/path",
        "file:///etc/passwd",
    ],
)
def test_other_forms_are_refused(url: str) -> None:
    assert check_url(url)


class FakeSigner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def sign(self, bucket: str, path: str, ttl_seconds: int, **_: object) -> str:
        self.calls.append((bucket, path, ttl_seconds))
        return f"https://signed/{bucket}/{path}?ttl={ttl_seconds}"


def test_gcs_held_loras_get_a_fifteen_minute_signed_url() -> None:
    signer = FakeSigner()
    assert fetchable_url("lora1.safetensors", "lb", signer, 900) == (
        "https://signed/lb/lora1.safetensors?ttl=900"
    )
    assert fetchable_url("gs://b2/x.safetensors", "lb", signer, 900).startswith(
        "https://signed/b2/"
    )
    assert signer.calls == [("lb", "lora1.safetensors", 900), ("b2", "x.safetensors", 900)]


def test_web_urls_are_passed_through_unsigned() -> None:
    signer = FakeSigner()
    url = "https://huggingface.co/x/resolve/main/lora.safetensors"
    assert fetchable_url(url, "lb", signer, 900) == url
    assert signer.calls == []


@pytest.mark.parametrize(
    ("prompt", "triggers", "expected"),
    [
        (
            "A portrait of johndoe in a haunted house.",
            ["johndoe"],
            "A portrait of johndoe in a haunted house.",
        ),
        ("A portrait in a haunted house.", ["johndoe"], "johndoe, A portrait in a haunted house."),
        ("a portrait of JohnDoe", ["johndoe"], "a portrait of JohnDoe"),
        ("a party", ["art"], "art, a party"),  # a word, not a substring
        ("x", ["tok1", "tok2"], "tok1, tok2, x"),
        ("tok2 x", ["tok1", "tok2"], "tok1, tok2 x"),
        ("x", ["tok", "tok"], "tok, x"),
        ("x", ["", "tok"], "tok, x"),
        ("style of sks-person", ["sks-person"], "style of sks-person"),
        ("style of sks-person2", ["sks-person"], "sks-person, style of sks-person2"),
    ],
)
def test_missing_triggers_are_prepended(prompt: str, triggers: list[str], expected: str) -> None:
    assert with_triggers(prompt, triggers) == expected
