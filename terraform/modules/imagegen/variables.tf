variable "project_id" {
  description = "The environment's project (one project per environment)."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, queue and scheduler job."
  type        = string
  default     = "us-central1"
}

variable "environment" {
  description = "Environment name, used in labels (dev, prod)."
  type        = string
}

variable "firestore_location" {
  description = "Firestore location (fixed once created): a region or a multi-region such as nam5."
  type        = string
}

variable "dist_dir" {
  description = "Directory holding the bundles `make bundle` builds (<function>.zip)."
  type        = string
}

variable "cors_origins" {
  description = "Web origins of the frontend allowed to read images (and upload LoRAs) from the buckets directly."
  type        = list(string)
}

variable "retention_days" {
  description = "Days a generation (record, images, thumbnails) is kept: RETENTION_DAYS of the cleanup sweep."
  type        = number
  default     = 30
}

variable "lifecycle_grace_days" {
  description = "The bucket's lifecycle rule deletes generated objects this many days after retention: a backstop to the sweep that never races it."
  type        = number
  default     = 2
}

variable "cleanup_schedule" {
  description = "Cron schedule (UTC) of the cleanup sweep."
  type        = string
  default     = "*/15 * * * *"
}

variable "secret_versions" {
  description = "Secret Manager versions the functions read: a number pins one, `latest` follows rotations at the next instance start."
  type = object({
    fal_key          = string
    webhook_hmac_key = string
  })
  default = {
    fal_key          = "latest"
    webhook_hmac_key = "latest"
  }
}

variable "api_min_instances" {
  description = "Warm api instances (0 in dev; 1 in prod avoids a cold start on the first request)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Instance ceiling per function."
  type = object({
    api        = number
    webhook    = number
    dispatcher = number
    deadletter = number
    watchdog   = number
    cleanup    = number
  })
  default = {
    api        = 20
    webhook    = 20
    dispatcher = 10
    deadletter = 2
    watchdog   = 10
    cleanup    = 1
  }
}

variable "limits" {
  description = "Per-user admission limits of the api (REQUESTS_PER_HOUR, MAX_IN_FLIGHT, MONTHLY_MEGAPIXELS)."
  type = object({
    requests_per_hour  = number
    max_in_flight      = number
    monthly_megapixels = number
  })
  default = {
    requests_per_hour  = 50
    max_in_flight      = 2
    monthly_megapixels = 2000
  }
}

variable "firebase_project_id" {
  description = "Firebase project whose ID tokens the api accepts (null: this project)."
  type        = string
  default     = null
}

variable "log_level" {
  description = "LOG_LEVEL of every function."
  type        = string
  default     = "INFO"
}

variable "protect_data" {
  description = "Protect stored data from `terraform destroy`: Firestore delete protection and point-in-time recovery on, buckets not force-destroyed."
  type        = bool
  default     = true
}
