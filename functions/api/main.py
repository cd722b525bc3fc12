"""Cloud Function `api`: the public HTTPS API."""

import functions_framework
from werkzeug.exceptions import HTTPException

from imagegen import api as api_router
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging
from imagegen.web import framework_error

configure_logging()
configure_gc()
# Paths the framework's own router refuses get the API's JSON error, not Flask's HTML page.
functions_framework.errorhandler(HTTPException)(framework_error)


@functions_framework.http
def api(request):
    return api_router.handle(request)
