# Firestore: the database, the composite indexes the code's queries need, and TTL policies.
# tests/unit/test_infrastructure.py runs every query the code builds and checks that each
# one that needs a composite index has it here, and that every index here serves a query.

module "firestore" {
  source     = "../firestore"
  depends_on = [module.apis]

  project_id             = var.project_id
  location_id            = var.firestore_location
  delete_protection      = var.protect_data
  point_in_time_recovery = var.protect_data

  composite_indexes = {
    # History (imagegen.repository.GenerationRepository.list_for_user): a user's generations,
    # optionally filtered by status and/or model, newest first (created_at DESC, then id
    # DESC). One index per combination of equality filters; created_at also carries the
    # createdAfter/createdBefore range.
    history = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
    history_status = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "status", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
    history_model = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "model", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
    history_status_model = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "status", order = "ASCENDING" },
        { field_path = "model", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }

    # History's `total` (a count aggregation over the same filters, without the ordering):
    # with a createdAfter/createdBefore range Firestore orders by created_at ASCENDING
    # implicitly, which the DESCENDING indexes above cannot serve.
    history_count = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "created_at", order = "ASCENDING" },
      ]
    }
    history_count_status = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "status", order = "ASCENDING" },
        { field_path = "created_at", order = "ASCENDING" },
      ]
    }
    history_count_model = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "model", order = "ASCENDING" },
        { field_path = "created_at", order = "ASCENDING" },
      ]
    }
    history_count_status_model = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "status", order = "ASCENDING" },
        { field_path = "model", order = "ASCENDING" },
        { field_path = "created_at", order = "ASCENDING" },
      ]
    }

    # Admission (imagegen.limits.Ledger.unfinished_query): counts a user's unfinished
    # generations (user_id ==, status IN) inside the admitting transaction. Equality filters
    # alone could be served by merging single-field indexes; this index makes the count one
    # short range scan on the hot path.
    unfinished = {
      collection = "generations"
      fields = [
        { field_path = "user_id", order = "ASCENDING" },
        { field_path = "status", order = "ASCENDING" },
      ]
    }

    # Cleanup's stuck phase (imagegen.cleanup.FirestoreCleanupStore._stuck_query):
    # status IN [queued, submitted], updated_at < cutoff, ordered by updated_at.
    stuck = {
      collection = "generations"
      fields = [
        { field_path = "status", order = "ASCENDING" },
        { field_path = "updated_at", order = "ASCENDING" },
      ]
    }
  }

  ttl_fields = {
    # Idempotency records live 24 h (imagegen.idempotency); an expired one is overwritten
    # anyway, the policy only keeps the collection from growing.
    idempotency = { collection = "idempotencyKeys", field = "expire_at" }
    # Tombstones of deleted generations (30 days, imagegen.repository.TOMBSTONE_TTL).
    tombstones = { collection = "deletedGenerations", field = "expire_at" }
  }
}
