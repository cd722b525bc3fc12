"""Cloud Function `webhook`: receives fal.ai's signed result callbacks."""

import functions_framework
from werkzeug.exceptions import HTTPException

from imagegen import webhook_routes
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging
from imagegen.web import framework_error

configure_logging()
configure_gc()
# Paths the framework's own router refuses get a JSON error, not Flask's HTML page.
functions_framework.errorhandler(HTTPException)(framework_error)


@functions_framework.http
def webhook(request):
    return webhook_routes.handle(request)
