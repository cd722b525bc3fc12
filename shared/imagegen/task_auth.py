"""Only Cloud Tasks may call the watchdog: its OIDC token, for our service account.

Cloud Tasks signs each call with a Google-issued ID token for `WATCHDOG_INVOKER` and the
watchdog's URL as audience. Functions gen2 also enforce IAM (roles/run.invoker) before the
code runs; this check is the same rule in the code, so a misconfigured IAM binding does not
open the endpoint. Locally the emulator sends no token and WATCHDOG_INVOKER is unset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from imagegen.auth import bearer_token
from imagegen.errors import AuthenticationError, PermissionDeniedError

TokenVerifier = Callable[[str, str], Mapping[str, Any]]


def google_verifier(token: str, audience: str) -> Mapping[str, Any]:
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    return id_token.verify_oauth2_token(token, Request(), audience=audience)


def authorize_task_call(
    authorization: str | None,
    invoker: str | None,
    audience: str,
    verify: TokenVerifier = google_verifier,
) -> None:
    if invoker is None:
        return
    token = bearer_token(authorization)
    try:
        claims = verify(token, audience)
    except ValueError as exc:
        raise AuthenticationError("Invalid OIDC token", code="invalid_token") from exc
    if claims.get("email") != invoker or claims.get("email_verified") is not True:
        raise PermissionDeniedError("This endpoint is for Cloud Tasks", code="forbidden")
