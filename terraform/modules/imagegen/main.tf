# The whole imagegen backend in one project: what the environments (environments/dev,
# environments/prod) instantiate with their own variables. Reusable building blocks live in
# the sibling modules; this module wires them together and holds the product's decisions:
# names, sizes, who may do what. See docs/decisions/0007-infrastructure.md.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = {
    app         = "imagegen"
    environment = var.environment
  }

  project_number = data.google_project.this.number

  # Google-managed identities this stack grants roles to.
  pubsub_service_agent = "service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Cloud Run's deterministic URL of each function's service. Computed rather than read
  # from the functions because the watchdog and cleanup functions need their own URL (the
  # audience their callers' OIDC tokens must name), which a resource cannot reference, and
  # because the functions refer to one another. Without a trailing slash: Cloud Tasks and
  # Cloud Scheduler use exactly this string as the token's audience, and Cloud Run accepts
  # its service URL as audience.
  function_url = {
    for name in ["api", "webhook", "dispatcher", "deadletter", "watchdog", "cleanup"] :
    name => "https://${name}-${local.project_number}.${var.region}.run.app"
  }
}

module "apis" {
  source = "../project_services"

  project_id = var.project_id
  services = [
    "artifactregistry.googleapis.com",     # function images (built by Cloud Functions)
    "cloudbuild.googleapis.com",           # function builds
    "cloudfunctions.googleapis.com",       # the functions
    "cloudresourcemanager.googleapis.com", # project metadata and IAM
    "cloudscheduler.googleapis.com",       # the cleanup schedule
    "cloudtasks.googleapis.com",           # watchdog checks
    "eventarc.googleapis.com",             # Pub/Sub triggers
    "firestore.googleapis.com",            # records
    "iam.googleapis.com",                  # service accounts
    "iamcredentials.googleapis.com",       # signBlob for V4 signed URLs
    "logging.googleapis.com",              # function logs
    "pubsub.googleapis.com",               # generation requests
    "run.googleapis.com",                  # 2nd gen functions run on Cloud Run
    "secretmanager.googleapis.com",        # FAL_KEY, WEBHOOK_HMAC_KEY
    "storage.googleapis.com",              # images, LoRAs, function sources
  ]
}
