# A bucket nothing can make public: uniform bucket-level access (IAM only, no object ACLs)
# and public access prevention enforced. Objects are served through V4 signed URLs only.
resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:No usage-log bucket: objects are read by browsers through short-lived signed URLs, and per-request logs of that would cost more than they tell; configuration and IAM changes are in the Admin Activity audit logs (always on), and Data Access logs can be enabled for an investigation.
  #checkov:skip=CKV_GCP_78:No object versioning, on purpose: a deleted generation (user DELETE, retention sweep) must really be gone, LoRA files go only by an admin's explicit delete, function sources are rebuilt from git; the bucket's default soft-delete window still covers operator mistakes.
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = "STANDARD"
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels

  dynamic "lifecycle_rule" {
    for_each = var.delete_after_days == null ? [] : [var.delete_after_days]
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = var.delete_prefixes
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "cors" {
    for_each = var.cors
    content {
      origin          = cors.value.origins
      method          = cors.value.methods
      response_header = cors.value.response_headers
      max_age_seconds = cors.value.max_age_seconds
    }
  }
}
