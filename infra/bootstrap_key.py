"""Issue the first admin API key of a deployment, straight into its Firestore.

    python -m infra.bootstrap_key --project <project id> [--user admin] [--role admin]

`POST /v1/admin/apiKeys` needs an admin to call it, so a fresh deployment's first admin key
is written here, exactly as that endpoint writes one (`imagegen.auth.issue_api_key`: only
the key's SHA-256 hash is stored). Credentials are Application Default Credentials
(`gcloud auth application-default login`) of someone who may write the project's Firestore
(roles/datastore.user). The key is printed once, on stdout; it is not stored anywhere else.
Later keys are issued with the API itself, by this admin.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime

USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")  # as POST /v1/admin/apiKeys accepts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="the deployment's project id")
    parser.add_argument("--user", default="admin", help="user id the key acts as")
    parser.add_argument("--role", choices=("admin", "user"), default="admin")
    args = parser.parse_args(argv)
    if not USER_ID.match(args.user):
        parser.error("--user must be 1..128 of [A-Za-z0-9_.@:-]")
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        parser.error("FIRESTORE_EMULATOR_HOST is set: this writes to the real Firestore only")

    from google.cloud import firestore

    from imagegen.auth import issue_api_key
    from imagegen.repository import ApiKeyRepository

    keys = ApiKeyRepository(firestore.Client(project=args.project))
    api_key, record = issue_api_key(keys, args.user, args.role, datetime.now(UTC))
    print(
        f"issued {record.role} key {record.key_id} for user {record.user_id} in {args.project}",
        file=sys.stderr,
    )
    print(api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
