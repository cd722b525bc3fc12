"""Cloud Function `api`: the public HTTPS API."""

import functions_framework
from imagegen import api_routes
from imagegen.logging_setup import configure_logging

configure_logging()


@functions_framework.http
def api(request):
    return api_routes.handle(request)
