variable "project_id" {
  description = "Project the function is deployed to."
  type        = string
}

variable "region" {
  description = "Region of the function (and of its Eventarc trigger)."
  type        = string
}

variable "name" {
  description = "Function name; also the name of its Cloud Run service."
  type        = string
}

variable "description" {
  description = "What the function does."
  type        = string
}

variable "entry_point" {
  description = "Name of the decorated function in main.py."
  type        = string
}

variable "source_bucket" {
  description = "Bucket the source archive is uploaded to."
  type        = string
}

variable "source_archive" {
  description = "Path of the zip built by `make bundle` (main.py at its root)."
  type        = string
}

variable "build_service_account_id" {
  description = "Service account Cloud Build runs the function's build as (projects/P/serviceAccounts/EMAIL)."
  type        = string
}

variable "service_account_email" {
  description = "The function's own identity."
  type        = string
}

variable "memory" {
  description = "Memory per instance, e.g. 512Mi."
  type        = string
}

variable "cpu" {
  description = "vCPUs per instance; at least 1 when concurrency > 1. null: derived from memory."
  type        = string
  default     = null
}

variable "timeout_seconds" {
  description = "Request timeout."
  type        = number
}

variable "min_instances" {
  description = "Instances kept warm."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Instance ceiling: bounds cost and the load on downstream services."
  type        = number
}

variable "concurrency" {
  description = "Requests one instance serves at once."
  type        = number
  default     = 1
}

variable "environment" {
  description = "Environment variables (settings; never secrets)."
  type        = map(string)
  default     = {}
}

variable "secrets" {
  description = "Secret Manager secrets exposed as environment variables: env name => {secret id, version}."
  type = map(object({
    secret  = string
    version = string
  }))
  default = {}
}

variable "public" {
  description = "Reachable from the internet by anyone (the function authenticates callers itself)."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "Principals allowed to invoke a private function, by a stable key (e.g. tasks = serviceAccount:...)."
  type        = map(string)
  default     = {}
}

variable "event_trigger" {
  description = "Pub/Sub trigger through Eventarc (null for HTTP functions). dead_letter: where the trigger's subscription sends messages it gave up on."
  type = object({
    topic                 = string
    service_account_email = string
    dead_letter = optional(object({
      topic                 = string
      max_delivery_attempts = number
      min_retry_delay       = string
      max_retry_delay       = string
      pubsub_service_agent  = string
    }))
  })
  default = null
}

variable "labels" {
  description = "Labels for the function."
  type        = map(string)
  default     = {}
}
