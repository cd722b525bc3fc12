# Buckets. Names are derived from the project id, which is globally unique, so bucket
# names are too. IMAGES_BUCKET and LORA_BUCKET of the functions name these.

module "images_bucket" {
  source     = "../private_bucket"
  depends_on = [module.apis]

  project_id    = var.project_id
  name          = "${var.project_id}-images"
  location      = var.region
  force_destroy = !var.protect_data
  labels        = local.labels

  # The cleanup sweep deletes generations past RETENTION_DAYS with their objects; this rule
  # is the backstop for objects it missed (an orphan under a prefix it never lists, a sweep
  # that stopped running). It acts a few days later so it never deletes an image whose
  # record the sweep has not yet removed. Prefixes: imagegen.storage.generation_prefixes.
  delete_after_days = var.retention_days + var.lifecycle_grace_days
  delete_prefixes   = ["generations/", "thumbnails/"]

  # Browsers load images and thumbnails through signed URLs (GET); the frontend may read
  # them with fetch() too, which needs CORS.
  cors = [{
    origins          = var.cors_origins
    methods          = ["GET", "HEAD"]
    response_headers = ["Content-Type", "Content-Length", "ETag"]
    max_age_seconds  = 3600
  }]
}

module "lora_bucket" {
  source     = "../private_bucket"
  depends_on = [module.apis]

  project_id    = var.project_id
  name          = "${var.project_id}-loras"
  location      = var.region
  force_destroy = !var.protect_data
  labels        = local.labels

  # LoRAs are kept until an admin removes them: no lifecycle rule. Admin frontends upload
  # the file straight to the resumable upload session the api opens (decision 0005): PUT,
  # with Content-Range for chunks; Range tells the client how much arrived.
  cors = [{
    origins          = var.cors_origins
    methods          = ["GET", "HEAD", "PUT"]
    response_headers = ["Content-Type", "Content-Range", "Range", "X-Goog-Resumable"]
    max_age_seconds  = 3600
  }]
}

# Function source archives (dist/<function>.zip), read by the functions' builds.
module "sources_bucket" {
  source     = "../private_bucket"
  depends_on = [module.apis]

  project_id    = var.project_id
  name          = "${var.project_id}-function-sources"
  location      = var.region
  force_destroy = true # only build inputs: every archive can be rebuilt from git
  labels        = local.labels
}
