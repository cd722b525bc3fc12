"""What every route module needs: who is calling, and JSON bodies parsed into models."""

from __future__ import annotations

import re

import flask

from imagegen import context, firebase_auth
from imagegen.auth import Principal, authenticate
from imagegen.errors import PermissionDeniedError

# Ids we mint are UUIDs; anything else cannot be ours and may not be a valid Firestore id.
RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")


def principal(request: flask.Request) -> Principal:
    return authenticate(
        context.api_keys(), request.headers.get("Authorization"), firebase_auth.verifier()
    )


def admin(request: flask.Request) -> Principal:
    caller = principal(request)
    if not caller.is_admin:
        raise PermissionDeniedError("This endpoint is for administrators")
    return caller


def valid_id(resource_id: str) -> bool:
    return RESOURCE_ID.fullmatch(resource_id) is not None
