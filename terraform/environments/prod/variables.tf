variable "project_id" {
  description = "The prod project."
  type        = string
}

variable "region" {
  description = "Region of every regional resource."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (fixed once the database exists): nam5 replicates across US regions."
  type        = string
  default     = "nam5"
}

variable "cors_origins" {
  description = "Frontend origins allowed to read images and upload LoRAs from the browser (the production web app's origin)."
  type        = list(string)
}

variable "fal_key_version" {
  description = "Secret Manager version of fal-key the functions read: pin a number in prod so a rotation is a reviewed deploy."
  type        = string
  default     = "latest"
}

variable "webhook_hmac_key_version" {
  description = "Secret Manager version of webhook-hmac-key the functions read."
  type        = string
  default     = "latest"
}
