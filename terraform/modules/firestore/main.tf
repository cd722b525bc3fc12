# The (default) Firestore database in Native mode, the composite indexes the code's queries
# need, and TTL policies on the documents that only matter for a while.
resource "google_firestore_database" "this" {
  project                           = var.project_id
  name                              = "(default)"
  location_id                       = var.location_id
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = var.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # `terraform destroy` never deletes the data; with protection off it can be deleted by hand.
  deletion_policy = "ABANDON"
}

resource "google_firestore_index" "composite" {
  for_each = var.composite_indexes

  project     = var.project_id
  database    = google_firestore_database.this.name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }
}

resource "google_firestore_field" "ttl" {
  for_each = var.ttl_fields

  project    = var.project_id
  database   = google_firestore_database.this.name
  collection = each.value.collection
  field      = each.value.field

  ttl_config {}

  # No single-field indexes on the expiry timestamp: nothing queries it, and an index on a
  # monotonically increasing timestamp is a write hotspot.
  index_config {}
}
