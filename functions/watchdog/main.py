"""Cloud Function `watchdog`: Cloud Tasks' checks on fal requests whose webhook is late."""

import functions_framework

from imagegen import watchdog_routes
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging

configure_logging()
configure_gc()


@functions_framework.http
def watchdog(request):
    return watchdog_routes.handle(request)
