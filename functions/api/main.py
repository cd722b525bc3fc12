"""Cloud Function `api`: the public HTTPS API."""

import functions_framework

from imagegen import api as api_router
from imagegen.logging_setup import configure_logging

configure_logging()


@functions_framework.http
def api(request):
    return api_router.handle(request)
