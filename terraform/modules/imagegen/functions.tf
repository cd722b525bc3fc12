# The six functions, one module block each: what runs (entry point, trigger), how much of it
# (memory, CPU, timeout, instances, concurrency: the reason is beside each), what it is told
# (environment: the settings of imagegen.settings.Settings its code reads, by their
# upper-cased names), which secrets it gets and who may call it.
# tests/unit/test_infrastructure.py checks these blocks against the code: entry points and
# signature types against functions/*/main.py, variables against the settings each
# function's code reads.
# Why not one for_each over a map: checkov silently skips module instances created by
# for_each, so the security checks would pass without looking at any function.
#
# THREADS is read by functions-framework (not by our settings): gunicorn's thread count,
# which must equal the concurrency or requests queue inside the instance (its default is
# 4 per vCPU). SSL_CERT_DIR is read by httpx, ours and fal_client's: trust anchors from the
# image's hashed CA directory (Ubuntu's ca-certificates), read only as a handshake needs
# them, instead of certifi's bundle parsed whole for each TLS context, ~13 ms of a cold
# start each (docs/decisions/0011-trust-from-a-ca-directory.md).

locals {
  tasks_queue = "projects/${var.project_id}/locations/${var.region}/queues/${google_cloud_tasks_queue.watchdog.name}"

  fal_key          = { secret = google_secret_manager_secret.this["fal_key"].secret_id, version = var.secret_versions.fal_key }
  webhook_hmac_key = { secret = google_secret_manager_secret.this["webhook_hmac_key"].secret_id, version = var.secret_versions.webhook_hmac_key }
}

module "api" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "api"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/api.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["api"].email
  labels                   = local.labels

  description = "Public HTTPS API (API keys and Firebase ID tokens are checked in the code)."
  entry_point = "api"
  public      = true
  # I/O-bound (Firestore, Pub/Sub, signBlob); `Prefer: wait` holds a request for up to
  # 60 s while it mostly sleeps, so one instance serves many at once.
  memory          = "512Mi"
  cpu             = "1"
  concurrency     = 16
  timeout_seconds = 90 # longest wait (60 s, imagegen.waiting) plus the work around it
  min_instances   = var.api_min_instances
  max_instances   = var.max_instances.api
  environment = {
    SSL_CERT_DIR        = "/etc/ssl/certs"
    GCP_PROJECT         = var.project_id
    LOG_LEVEL           = var.log_level
    THREADS             = "16"
    IMAGES_BUCKET       = module.images_bucket.name
    LORA_BUCKET         = module.lora_bucket.name
    GENERATIONS_TOPIC   = google_pubsub_topic.generation_requests.name
    FIREBASE_PROJECT_ID = coalesce(var.firebase_project_id, var.project_id)
    REQUESTS_PER_HOUR   = var.limits.requests_per_hour
    MAX_IN_FLIGHT       = var.limits.max_in_flight
    MONTHLY_MEGAPIXELS  = var.limits.monthly_megapixels
  }
  secrets = {
    FAL_KEY = local.fal_key # cancelling a running generation at fal
  }
  invokers      = {}
  event_trigger = null
}

module "webhook" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "webhook"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/webhook.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["webhook"].email
  labels                   = local.labels

  description = "fal.ai's result callbacks: public, every delivery's ED25519 signature is verified."
  entry_point = "webhook"
  public      = true
  # Each delivery downloads up to 4 images (25 MB at most each) and decodes them with
  # Pillow (up to 16 MP) for thumbnails: ~250 MB in the worst case, so 1 GiB for 4 at once.
  memory          = "1Gi"
  cpu             = "1"
  concurrency     = 4
  timeout_seconds = 60 # fal waits 15 s; past WEBHOOK_INGEST_BUDGET_SECONDS the copy goes to the watchdog
  min_instances   = 0
  max_instances   = var.max_instances.webhook
  environment = {
    SSL_CERT_DIR     = "/etc/ssl/certs"
    GCP_PROJECT      = var.project_id
    LOG_LEVEL        = var.log_level
    THREADS          = "4"
    IMAGES_BUCKET    = module.images_bucket.name
    TASKS_QUEUE      = local.tasks_queue
    WATCHDOG_URL     = local.function_url.watchdog
    WATCHDOG_INVOKER = google_service_account.invoker["tasks"].email
  }
  secrets = {
    WEBHOOK_HMAC_KEY = local.webhook_hmac_key
  }
  invokers      = {}
  event_trigger = null
}

module "dispatcher" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "dispatcher"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/dispatcher.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["dispatcher"].email
  labels                   = local.labels

  description = "Submits generation requests from Pub/Sub (Eventarc) to fal.ai."
  entry_point = "dispatcher"
  public      = false
  # Waits on fal's submit (FAL_SUBMIT_TIMEOUT_SECONDS, 30 s) and Firestore; 8 at once per
  # instance, 10 instances: at most 80 submissions in flight towards fal.
  memory          = "512Mi"
  cpu             = "1"
  concurrency     = 8
  timeout_seconds = 120 # two fal submits (a 5-image generation is 2 parts) with their timeouts
  min_instances   = 0
  max_instances   = var.max_instances.dispatcher
  environment = {
    SSL_CERT_DIR     = "/etc/ssl/certs"
    GCP_PROJECT      = var.project_id
    LOG_LEVEL        = var.log_level
    THREADS          = "8"
    IMAGES_BUCKET    = module.images_bucket.name
    LORA_BUCKET      = module.lora_bucket.name
    WEBHOOK_URL      = local.function_url.webhook
    TASKS_QUEUE      = local.tasks_queue
    WATCHDOG_URL     = local.function_url.watchdog
    WATCHDOG_INVOKER = google_service_account.invoker["tasks"].email
  }
  secrets = {
    FAL_KEY          = local.fal_key
    WEBHOOK_HMAC_KEY = local.webhook_hmac_key
  }
  invokers = {}
  event_trigger = {
    topic                 = google_pubsub_topic.generation_requests.id
    service_account_email = google_service_account.invoker["eventarc-dispatcher"].email
    dead_letter = {
      topic                 = google_pubsub_topic.dead_letter.id
      max_delivery_attempts = local.max_delivery_attempts
      min_retry_delay       = "10s"
      max_retry_delay       = "600s"
      pubsub_service_agent  = local.pubsub_service_agent
    }
  }
}

module "deadletter" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "deadletter"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/deadletter.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["deadletter"].email
  labels                   = local.labels

  description = "Fails the generations Pub/Sub gave up delivering (dispatch_failed)."
  entry_point = "deadletter"
  public      = false
  # One Firestore transaction per dead letter, rare by design: the smallest instance.
  memory          = "256Mi"
  cpu             = null # derived from memory (a fraction of a vCPU), hence concurrency 1
  concurrency     = 1
  timeout_seconds = 60
  min_instances   = 0
  max_instances   = var.max_instances.deadletter
  environment = {
    SSL_CERT_DIR  = "/etc/ssl/certs"
    GCP_PROJECT   = var.project_id
    LOG_LEVEL     = var.log_level
    THREADS       = "1"
    IMAGES_BUCKET = module.images_bucket.name
  }
  secrets  = {}
  invokers = {}
  event_trigger = {
    topic                 = google_pubsub_topic.dead_letter.id
    service_account_email = google_service_account.invoker["eventarc-deadletter"].email
    dead_letter           = null # the end of the line: retried until it succeeds
  }
}

module "watchdog" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "watchdog"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/watchdog.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["watchdog"].email
  labels                   = local.labels

  description = "Cloud Tasks' checks on fal requests whose webhook is late."
  entry_point = "watchdog"
  public      = false
  # May fetch a finished result and ingest it like the webhook does (same memory).
  memory          = "1Gi"
  cpu             = "1"
  concurrency     = 4
  timeout_seconds = 300 # an ingest without fal's 15 s limit: 4 downloads of up to 30 s each, thumbnails
  min_instances   = 0
  max_instances   = var.max_instances.watchdog
  environment = {
    SSL_CERT_DIR      = "/etc/ssl/certs"
    GCP_PROJECT       = var.project_id
    LOG_LEVEL         = var.log_level
    THREADS           = "4"
    IMAGES_BUCKET     = module.images_bucket.name
    GENERATIONS_TOPIC = google_pubsub_topic.generation_requests.name
    TASKS_QUEUE       = local.tasks_queue
    WATCHDOG_URL      = local.function_url.watchdog
    WATCHDOG_INVOKER  = google_service_account.invoker["tasks"].email
  }
  secrets = {
    FAL_KEY = local.fal_key # status and result of fal requests
  }
  invokers = {
    tasks = "serviceAccount:${google_service_account.invoker["tasks"].email}"
  }
  event_trigger = null
}

module "cleanup" {
  source = "../function"
  # It reads Firestore, its secrets and buckets from its first request on.
  depends_on = [
    module.firestore,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_secret_manager_secret_iam_member.accessors,
    google_service_account_iam_member.sign_as_self,
  ]

  project_id               = var.project_id
  region                   = var.region
  name                     = "cleanup"
  source_bucket            = module.sources_bucket.name
  source_archive           = "${var.dist_dir}/cleanup.zip"
  build_service_account_id = google_service_account.build.id
  service_account_email    = google_service_account.function["cleanup"].email
  labels                   = local.labels

  description = "Cloud Scheduler's sweep: retention, stuck generations, orphaned objects."
  entry_point = "cleanup"
  public      = false
  # One sweep at a time (a lease makes a second one skip): one instance, one request.
  memory          = "512Mi"
  cpu             = "1"
  concurrency     = 1
  timeout_seconds = 300 # CLEANUP_TIME_BUDGET_SECONDS (240) plus the batch in progress
  min_instances   = 0
  max_instances   = var.max_instances.cleanup
  environment = {
    SSL_CERT_DIR                = "/etc/ssl/certs"
    GCP_PROJECT                 = var.project_id
    LOG_LEVEL                   = var.log_level
    THREADS                     = "1"
    IMAGES_BUCKET               = module.images_bucket.name
    GENERATIONS_TOPIC           = google_pubsub_topic.generation_requests.name
    RETENTION_DAYS              = var.retention_days
    CLEANUP_TIME_BUDGET_SECONDS = "240"
    CLEANUP_URL                 = local.function_url.cleanup
    CLEANUP_INVOKER             = google_service_account.invoker["scheduler"].email
  }
  secrets = {}
  invokers = {
    scheduler = "serviceAccount:${google_service_account.invoker["scheduler"].email}"
  }
  event_trigger = null
}
