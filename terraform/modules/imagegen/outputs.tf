output "api_url" {
  description = "Base URL of the public API."
  value       = module.api.uri
}

output "webhook_url" {
  description = "URL of fal.ai's webhook (the dispatcher passes it to fal with every request, as WEBHOOK_URL)."
  value       = module.webhook.uri
}

output "function_urls" {
  description = "Every function's deterministic Cloud Run URL, as the functions are told them."
  value       = local.function_url
}

output "images_bucket" {
  description = "Bucket of generated images and thumbnails."
  value       = module.images_bucket.name
}

output "lora_bucket" {
  description = "Bucket of LoRA files."
  value       = module.lora_bucket.name
}

output "tasks_queue" {
  description = "Full name of the watchdog's Cloud Tasks queue."
  value       = local.tasks_queue
}

output "dead_letter_audit_subscription" {
  description = "Pull subscription keeping a week of dead-lettered generation requests."
  value       = google_pubsub_subscription.dead_letter_audit.id
}

output "function_service_accounts" {
  description = "Each function's service account e-mail."
  value       = { for name, account in google_service_account.function : name => account.email }
}
