"""Cloud Function `webhook`: receives fal.ai's signed result callbacks."""

import functions_framework

from imagegen import webhook_routes
from imagegen.logging_setup import configure_logging

configure_logging()


@functions_framework.http
def webhook(request):
    return webhook_routes.handle(request)
