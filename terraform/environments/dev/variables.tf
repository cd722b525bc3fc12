variable "project_id" {
  description = "The dev project."
  type        = string
}

variable "region" {
  description = "Region of every regional resource."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (fixed once the database exists)."
  type        = string
  default     = "us-central1"
}

variable "cors_origins" {
  description = "Frontend origins allowed to read images and upload LoRAs from the browser."
  type        = list(string)
  default     = ["http://localhost:3000", "http://localhost:5173"]
}

variable "fal_key_version" {
  description = "Secret Manager version of fal-key the functions read."
  type        = string
  default     = "latest"
}

variable "webhook_hmac_key_version" {
  description = "Secret Manager version of webhook-hmac-key the functions read."
  type        = string
  default     = "latest"
}
