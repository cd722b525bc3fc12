variable "project_id" {
  description = "Project that owns the database."
  type        = string
}

variable "location_id" {
  description = "Firestore location (a region such as us-central1, or a multi-region such as nam5). Cannot be changed later."
  type        = string
}

variable "delete_protection" {
  description = "Refuse to delete the database (prod)."
  type        = bool
  default     = true
}

variable "point_in_time_recovery" {
  description = "Keep 7 days of versions for point-in-time recovery."
  type        = bool
  default     = true
}

variable "composite_indexes" {
  description = "Composite indexes by a stable key: the collection and its fields in index order (order ASCENDING or DESCENDING)."
  type = map(object({
    collection = string
    fields = list(object({
      field_path = string
      order      = string
    }))
  }))
  default = {}
}

variable "ttl_fields" {
  description = "TTL policies by a stable key: documents of `collection` are deleted once their timestamp `field` has passed."
  type = map(object({
    collection = string
    field      = string
  }))
  default = {}
}
