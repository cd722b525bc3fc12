variable "project_id" {
  description = "Project that owns the bucket."
  type        = string
}

variable "name" {
  description = "Globally unique bucket name."
  type        = string
}

variable "location" {
  description = "Bucket location; the functions' region keeps reads and writes in-region."
  type        = string
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a non-empty bucket (dev only)."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
}

variable "delete_after_days" {
  description = "Objects under `delete_prefixes` are deleted this many days after creation (null: never)."
  type        = number
  default     = null
}

variable "delete_prefixes" {
  description = "Name prefixes the age-based deletion applies to."
  type        = list(string)
  default     = []
}

variable "cors" {
  description = "CORS rules for browsers reading (or uploading to) the bucket directly."
  type = list(object({
    origins          = list(string)
    methods          = list(string)
    response_headers = list(string)
    max_age_seconds  = number
  }))
  default = []
}
