"""The bare functions-framework functions `make bench` compares cold starts against."""

import functions_framework


@functions_framework.http
def bare_http(request):
    return {"status": "ok"}


@functions_framework.cloud_event
def bare_event(cloud_event):
    return None
