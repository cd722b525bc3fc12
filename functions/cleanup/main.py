"""Cloud Function `cleanup`: Cloud Scheduler's sweep (retention, stuck generations, orphans)."""

import functions_framework

from imagegen import cleanup_routes
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging

configure_logging()
configure_gc()


@functions_framework.http
def cleanup(request):
    return cleanup_routes.handle(request)
