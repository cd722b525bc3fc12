"""The bare functions-framework functions `make bench` compares against: cold starts
(bare_http, bare_event) and the accept path's served floor (bare_accept)."""

import sys
import threading
from pathlib import Path

import functions_framework

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: infra.*
_operation = None
_lock = threading.Lock()


@functions_framework.http
def bare_http(request):
    return {"status": "ok"}


@functions_framework.cloud_event
def bare_event(cloud_event):
    return None


@functions_framework.http
def bare_accept(request):
    """The floor's Firestore create + publish behind the api's server (gunicorn, threads)."""
    global _operation
    from infra.bench_load import floor_operation

    with _lock:
        if _operation is None:
            _operation = floor_operation()
    _operation()
    return {"status": "queued"}, 202
