# prod: data protected (Firestore delete protection and point-in-time recovery, buckets not
# force-destroyed), one api instance kept warm, the module's default ceilings.
module "imagegen" {
  source = "../../modules/imagegen"

  project_id         = var.project_id
  region             = var.region
  environment        = "prod"
  firestore_location = var.firestore_location
  dist_dir           = "${path.root}/../../../dist"
  cors_origins       = var.cors_origins
  protect_data       = true
  log_level          = "INFO"

  secret_versions = {
    fal_key          = var.fal_key_version
    webhook_hmac_key = var.webhook_hmac_key_version
  }

  api_min_instances = 1
}
