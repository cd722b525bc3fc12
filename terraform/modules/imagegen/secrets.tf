# The secrets exist here; their values never do. DEPLOY.md adds the versions with gcloud
# (`gcloud secrets versions add`), so no secret value is in Terraform's state or in git.
locals {
  secrets = {
    fal_key = {
      secret_id   = "fal-key"
      description = "fal.ai API key (FAL_KEY)."
    }
    webhook_hmac_key = {
      secret_id   = "webhook-hmac-key"
      description = "Key of the HMAC binding webhook URLs to their generation (WEBHOOK_HMAC_KEY, at least 16 characters)."
    }
  }
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value.secret_id
  labels    = local.labels
  annotations = {
    description = each.value.description
  }

  replication {
    auto {}
  }

  depends_on = [module.apis]
}
