# Pub/Sub (api -> dispatcher, and the dead letters), Cloud Tasks (watchdog checks) and Cloud
# Scheduler (cleanup sweeps). Names match the code's defaults and the local stack
# (infra/stack.py), so local and deployed topologies are the same.

locals {
  # Pub/Sub gives up on a generation request after this many deliveries and dead-letters
  # it; the deadletter function then fails the generation (dispatch_failed). 5 is Pub/Sub's
  # minimum: each attempt is a full dispatcher call with exponential backoff in between, so
  # a message that failed 5 times is not going to succeed.
  max_delivery_attempts = 5
}

resource "google_pubsub_topic" "generation_requests" {
  #checkov:skip=CKV_GCP_83:Messages carry only a generation id (no prompt, no user data); Google-managed encryption at rest is enough, and a CMEK key would add a KMS dependency to the accept path.
  project    = var.project_id
  name       = "generation-requests"
  labels     = local.labels
  depends_on = [module.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Same payload as generation-requests (a generation id); Google-managed encryption at rest is enough.
  project    = var.project_id
  name       = "generation-requests-dead-letter"
  labels     = local.labels
  depends_on = [module.apis]
}

# Dead-lettering publishes as the Pub/Sub service agent.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${local.pubsub_service_agent}"
}

# The dead-letter topic's own subscription: the deadletter function consumes the dead
# letters through its Eventarc trigger (which has a subscription of its own); this one keeps
# a copy of each for a week, so an operator can see what was dead-lettered and replay it
# (gcloud pubsub subscriptions pull) after fixing the cause. Nothing acknowledges it.
resource "google_pubsub_subscription" "dead_letter_audit" {
  project                    = var.project_id
  name                       = "generation-requests-dead-letter-audit"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = local.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s" # 7 days, Pub/Sub's maximum for a subscription
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expires for inactivity
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

# Watchdog checks (TASKS_QUEUE): the dispatcher schedules one per fal request at the model's
# deadline; the webhook hands slow copies over; the watchdog re-schedules its rechecks.
resource "google_cloud_tasks_queue" "watchdog" {
  project    = var.project_id
  name       = "watchdog"
  location   = var.region
  depends_on = [module.apis]

  rate_limits {
    # A check is a fal status call and sometimes an ingest; 10/s with 20 in flight keeps
    # the watchdog (10 instances x 4 concurrent requests) below its ceiling even when a
    # fal outage makes many checks fall due at once.
    max_dispatches_per_second = 10
    max_concurrent_dispatches = 20
  }

  retry_config {
    # A failed check (5xx, timeout) is retried with backoff; the handler is idempotent and
    # the watchdog schedules its own later rechecks as new tasks, so retries only cover
    # transient failures. Past them, the cleanup sweep's stuck phase is the backstop.
    max_attempts       = 5
    min_backoff        = "10s"
    max_backoff        = "300s"
    max_doublings      = 4
    max_retry_duration = "3600s"
  }
}

# Cloud Scheduler calls the cleanup function with an OIDC token for its own service account
# (CLEANUP_INVOKER), with the function's URL (CLEANUP_URL) as audience.
resource "google_cloud_scheduler_job" "cleanup" {
  project          = var.project_id
  region           = var.region
  name             = "imagegen-cleanup"
  description      = "One cleanup sweep: retention, stuck generations, orphaned objects (decision 0006)."
  schedule         = var.cleanup_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "330s" # the function's timeout (300 s) plus the time to reach it

  # No retries: a sweep is resumable and the next one is minutes away; a retry would only
  # meet the failed sweep's lease and be skipped.
  retry_config {
    retry_count = 0
  }

  http_target {
    uri         = local.function_url.cleanup
    http_method = "POST"

    oidc_token {
      service_account_email = google_service_account.invoker["scheduler"].email
      audience              = local.function_url.cleanup
    }
  }

  depends_on = [module.cleanup]
}
