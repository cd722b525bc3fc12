# One Cloud Functions (2nd gen) function: its source archive, the function, and who may
# invoke it. A function is either public (the code authenticates callers) or private
# (internal ingress, and only the principals in `invokers` hold roles/run.invoker).

# The object name carries the archive's hash, so a changed bundle is a new object and a
# redeploy, and an unchanged one is neither.
resource "google_storage_bucket_object" "source" {
  bucket       = var.source_bucket
  name         = "${var.name}/${filesha256(var.source_archive)}.zip"
  source       = var.source_archive
  content_type = "application/zip"
}

resource "google_cloudfunctions2_function" "this" {
  #checkov:skip=CKV_GCP_124:Ingress is ALLOW_ALL only where var.public is true: the api (callers authenticate with API keys or Firebase ID tokens, checked in the code) and the webhook (fal.ai cannot present a Google identity token; every delivery's ED25519 signature is verified against fal's JWKS, see docs/decisions/0007-infrastructure.md). Every other function is ALLOW_INTERNAL_ONLY, which tests/unit/test_infrastructure.py asserts.
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = var.description
  labels      = var.labels

  build_config {
    runtime         = "python312"
    entry_point     = var.entry_point
    service_account = var.build_service_account_id
    # The buildpack compiles the source with `compileall -f -q .`; SOURCE_DATE_EPOCH makes
    # that bytecode hash-checked, so it survives the image export resetting every mtime to
    # 1980-01-01 00:00:01 and no instance compiles the package again on its cold start
    # (docs/decisions/0009-bytecode-in-the-build.md; infra.bundle.BUILD_ENVIRONMENT).
    environment_variables = {
      SOURCE_DATE_EPOCH = "315532801"
    }
    source {
      storage_source {
        bucket = google_storage_bucket_object.source.bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    timeout_seconds                  = var.timeout_seconds
    min_instance_count               = var.min_instances
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = var.concurrency
    # Private functions are called only by Eventarc, Cloud Tasks and Cloud Scheduler, which
    # Cloud Run counts as internal traffic when they are in the same project.
    ingress_settings               = var.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = var.service_account_email
    environment_variables          = var.environment

    dynamic "secret_environment_variables" {
      for_each = var.secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  dynamic "event_trigger" {
    for_each = var.event_trigger == null ? [] : [var.event_trigger]
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value.topic
      service_account_email = event_trigger.value.service_account_email
      # The handler raises on transient failures and Pub/Sub redelivers with backoff.
      retry_policy = "RETRY_POLICY_RETRY"
    }
  }

  lifecycle {
    precondition {
      condition     = var.concurrency == 1 || try(tonumber(var.cpu) >= 1, false)
      error_message = "A function serving more than one request at a time needs at least 1 vCPU."
    }
    precondition {
      condition     = !(var.public && length(var.invokers) > 0)
      error_message = "A public function is invokable by allUsers already; invokers are for private functions."
    }
  }
}

# Only for functions declared public (the api and fal.ai's webhook): see
# docs/decisions/0007-infrastructure.md.
resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.public ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = each.value
}

# The Eventarc trigger pushes events as its own service account.
resource "google_cloud_run_v2_service_iam_member" "trigger" {
  count = var.event_trigger == null ? 0 : 1

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.event_trigger.service_account_email}"
}

# Eventarc creates the trigger's Pub/Sub push subscription itself, and neither Eventarc nor
# the provider can give it a dead-letter policy
# (hashicorp/terraform-provider-google#25069): it is attached with gcloud after the trigger
# exists, and again whenever the trigger or the policy changes. The same script lets the
# Pub/Sub service agent subscribe to that subscription, which dead-lettering requires.
resource "terraform_data" "dead_letter" {
  count = try(var.event_trigger.dead_letter, null) == null ? 0 : 1

  triggers_replace = [
    google_cloudfunctions2_function.this.event_trigger[0].trigger,
    var.event_trigger.dead_letter,
  ]

  provisioner "local-exec" {
    command     = "${path.module}/attach-dead-letter.sh"
    interpreter = ["bash"]
    environment = {
      PROJECT               = var.project_id
      TRIGGER               = google_cloudfunctions2_function.this.event_trigger[0].trigger
      DEAD_LETTER_TOPIC     = var.event_trigger.dead_letter.topic
      MAX_DELIVERY_ATTEMPTS = var.event_trigger.dead_letter.max_delivery_attempts
      MIN_RETRY_DELAY       = var.event_trigger.dead_letter.min_retry_delay
      MAX_RETRY_DELAY       = var.event_trigger.dead_letter.max_retry_delay
      PUBSUB_SERVICE_AGENT  = var.event_trigger.dead_letter.pubsub_service_agent
    }
  }
}
