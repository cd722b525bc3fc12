"""Cloud Function `dispatcher`: Pub/Sub generation requests (via Eventarc) → fal.ai.

Raising makes Eventarc redeliver (retry is on); returning acknowledges the message.
"""

import functions_framework

from imagegen import dispatcher_event
from imagegen.gc_settings import configure_gc
from imagegen.logging_setup import configure_logging

configure_logging()
configure_gc()


@functions_framework.cloud_event
def dispatcher(cloud_event):
    dispatcher_event.handle(cloud_event.data, cloud_event["id"])
