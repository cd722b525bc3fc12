"""Idempotency keys: scoped per user, hashed, and tied to the exact request."""

from __future__ import annotations

import pytest

from imagegen.errors import BadRequestError
from imagegen.idempotency import claim


def test_no_key_no_claim() -> None:
    assert claim("u", None, "/v1/images/generations", {"prompt": "x"}) is None


def test_same_key_same_body_same_claim_whatever_the_key_order() -> None:
    a = claim("u", "k1", "/p", {"prompt": "x", "numImages": 2})
    b = claim("u", " k1 ", "/p", {"numImages": 2, "prompt": "x"})
    assert a == b


def test_a_different_body_or_endpoint_changes_the_request_hash_not_the_document() -> None:
    base = claim("u", "k1", "/p", {"prompt": "x"})
    other_body = claim("u", "k1", "/p", {"prompt": "y"})
    other_path = claim("u", "k1", "/q", {"prompt": "x"})
    assert base.doc_id == other_body.doc_id == other_path.doc_id
    assert len({base.request_hash, other_body.request_hash, other_path.request_hash}) == 3


def test_keys_are_scoped_per_user_and_stored_hashed() -> None:
    mine, theirs = claim("u1", "k1", "/p", {}), claim("u2", "k1", "/p", {})
    assert mine.doc_id != theirs.doc_id
    assert "k1" not in mine.doc_id and len(mine.doc_id) == 64


@pytest.mark.parametrize("key", ["", "   ", "x" * 256, "bad\nkey", "tab\tkey"])
def test_malformed_keys_are_a_400(key: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        claim("u", key, "/p", {})
    assert caught.value.code == "invalid_idempotency_key"


def test_longest_key_is_accepted() -> None:
    assert claim("u", "k" * 255, "/p", {}) is not None
