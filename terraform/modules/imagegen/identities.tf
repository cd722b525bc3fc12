# Identities and who may do what. Every function runs as its own service account holding
# only what its code does (no basic roles, no project-wide storage role: bucket, topic,
# queue and secret bindings). Callers of the private functions have identities of their own
# that may invoke exactly one function. The matrix is checked against the code by
# tests/unit/test_infrastructure.py.

resource "google_service_account" "function" {
  for_each = {
    api        = "Public HTTPS API: accepts generations, serves records and signed URLs."
    webhook    = "Receives fal.ai's signed result callbacks and copies the images."
    dispatcher = "Submits generation requests from Pub/Sub to fal.ai."
    deadletter = "Fails generations Pub/Sub gave up delivering."
    watchdog   = "Cloud Tasks' checks on fal requests whose webhook is late."
    cleanup    = "Scheduled sweep: retention, stuck generations, orphaned objects."
  }

  project      = var.project_id
  account_id   = "imagegen-${each.key}"
  display_name = "imagegen ${each.key} function"
  description  = each.value
  depends_on   = [module.apis]
}

# Who calls the private functions: each identity may invoke one function only.
resource "google_service_account" "invoker" {
  for_each = {
    eventarc-dispatcher = "Eventarc trigger identity delivering generation requests to the dispatcher."
    eventarc-deadletter = "Eventarc trigger identity delivering dead letters to the deadletter function."
    tasks               = "Cloud Tasks signs watchdog calls as this account (WATCHDOG_INVOKER)."
    scheduler           = "Cloud Scheduler signs cleanup calls as this account (CLEANUP_INVOKER)."
  }

  project      = var.project_id
  account_id   = "imagegen-${each.key}"
  display_name = "imagegen ${each.key} invoker"
  description  = each.value
  depends_on   = [module.apis]
}

# Cloud Build runs the functions' builds as this account instead of a default one.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "imagegen-build"
  display_name = "imagegen function builds"
  description  = "Cloud Build identity for building the functions' images."
  depends_on   = [module.apis]
}

locals {
  fn = { for name, account in google_service_account.function : name => "serviceAccount:${account.email}" }

  # The only project-level roles: Firestore has no finer-grained IAM, and the build's logs
  # and images go to project-wide services.
  function_project_roles = ["roles/datastore.user"]
  build_project_roles    = ["roles/logging.logWriter", "roles/artifactregistry.writer"]
  project_grants = merge(
    {
      for pair in setproduct(keys(local.fn), local.function_project_roles) :
      "${pair[1]}/${pair[0]}" => { role = pair[1], member = local.fn[pair[0]] }
    },
    {
      for role in local.build_project_roles :
      "${role}/build" => { role = role, member = "serviceAccount:${google_service_account.build.email}" }
    },
  )

  bucket_grants = {
    # api: signed GET URLs for images and thumbnails (a V4 URL acts as its signer), deleting
    # a generation's objects (list + delete).
    "images/api" = { bucket = module.images_bucket.name, role = "roles/storage.objectUser", member = local.fn.api }
    # webhook and watchdog ingest: upload images and thumbnails, clear a taken-over copy.
    "images/webhook"  = { bucket = module.images_bucket.name, role = "roles/storage.objectUser", member = local.fn.webhook }
    "images/watchdog" = { bucket = module.images_bucket.name, role = "roles/storage.objectUser", member = local.fn.watchdog }
    # cleanup: list and delete expired and orphaned objects.
    "images/cleanup" = { bucket = module.images_bucket.name, role = "roles/storage.objectUser", member = local.fn.cleanup }
    # api: LoRA upload sessions (create), signed GET URLs, removing a LoRA's file.
    "loras/api" = { bucket = module.lora_bucket.name, role = "roles/storage.objectUser", member = local.fn.api }
    # dispatcher: signed GET URLs handed to fal for the LoRAs of a generation.
    "loras/dispatcher" = { bucket = module.lora_bucket.name, role = "roles/storage.objectViewer", member = local.fn.dispatcher }
    # Function builds read their source archive.
    "sources/build" = { bucket = module.sources_bucket.name, role = "roles/storage.objectViewer", member = "serviceAccount:${google_service_account.build.email}" }
  }

  topic_grants = {
    # api publishes accepted generations; the watchdog and cleanup re-publish lost ones.
    "generation-requests/api"      = { topic = google_pubsub_topic.generation_requests.name, member = local.fn.api }
    "generation-requests/watchdog" = { topic = google_pubsub_topic.generation_requests.name, member = local.fn.watchdog }
    "generation-requests/cleanup"  = { topic = google_pubsub_topic.generation_requests.name, member = local.fn.cleanup }
  }

  # Functions that create watchdog tasks: they need to enqueue, and to act as the tasks
  # invoker account whose OIDC token the task carries.
  task_creators = {
    dispatcher = local.fn.dispatcher
    webhook    = local.fn.webhook
    watchdog   = local.fn.watchdog
  }

  secret_grants = {
    "fal_key/api"                 = { secret = "fal_key", member = local.fn.api } # cancel at fal
    "fal_key/dispatcher"          = { secret = "fal_key", member = local.fn.dispatcher }
    "fal_key/watchdog"            = { secret = "fal_key", member = local.fn.watchdog } # status, result
    "webhook_hmac_key/dispatcher" = { secret = "webhook_hmac_key", member = local.fn.dispatcher }
    "webhook_hmac_key/webhook"    = { secret = "webhook_hmac_key", member = local.fn.webhook }
  }

  # Functions that sign URLs: on Cloud Functions there is no key file, so the storage client
  # signs through IAM signBlob as the function's own account, which needs
  # roles/iam.serviceAccountTokenCreator on itself (imagegen.url_signing).
  url_signers = ["api", "dispatcher"]
}

resource "google_project_iam_member" "grants" {
  for_each = local.project_grants

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = local.bucket_grants

  bucket = each.value.bucket
  role   = each.value.role
  member = each.value.member
}

resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = local.topic_grants

  project = var.project_id
  topic   = each.value.topic
  role    = "roles/pubsub.publisher"
  member  = each.value.member
}

resource "google_cloud_tasks_queue_iam_member" "enqueuers" {
  for_each = local.task_creators

  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.watchdog.name
  role     = "roles/cloudtasks.enqueuer"
  member   = each.value
}

resource "google_service_account_iam_member" "act_as_tasks_invoker" {
  for_each = local.task_creators

  service_account_id = google_service_account.invoker["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

resource "google_secret_manager_secret_iam_member" "accessors" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value.member
}

resource "google_service_account_iam_member" "sign_as_self" {
  for_each = toset(local.url_signers)

  service_account_id = google_service_account.function[each.value].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.fn[each.value]
}

# Projects whose Pub/Sub service agent predates April 2021 lack its project-wide token
# creator grant; Eventarc's push subscriptions need it to mint the triggers' OIDC tokens.
resource "google_service_account_iam_member" "pubsub_mints_trigger_tokens" {
  for_each = toset(["eventarc-dispatcher", "eventarc-deadletter"])

  service_account_id = google_service_account.invoker[each.value].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_service_agent}"
}
