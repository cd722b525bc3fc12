"""Cloud Function `deadletter`: generations Pub/Sub gave up delivering are failed.

Returning acknowledges the dead letter; there is nothing further to retry.
"""

import functions_framework

from imagegen import deadletter_event
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging

configure_logging()
configure_gc()


@functions_framework.cloud_event
def deadletter(cloud_event):
    deadletter_event.handle(cloud_event.data, cloud_event["id"])
