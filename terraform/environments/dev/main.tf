# dev: a scratch environment. Data is not protected (destroy removes buckets and their
# objects; Firestore is abandoned, never deleted), nothing is kept warm, ceilings are low.
module "imagegen" {
  source = "../../modules/imagegen"

  project_id         = var.project_id
  region             = var.region
  environment        = "dev"
  firestore_location = var.firestore_location
  dist_dir           = "${path.root}/../../../dist"
  cors_origins       = var.cors_origins
  protect_data       = false
  log_level          = "DEBUG"

  secret_versions = {
    fal_key          = var.fal_key_version
    webhook_hmac_key = var.webhook_hmac_key_version
  }

  api_min_instances = 0
  max_instances = {
    api        = 5
    webhook    = 5
    dispatcher = 3
    deadletter = 1
    watchdog   = 3
    cleanup    = 1
  }
}
