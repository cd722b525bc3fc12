output "api_url" {
  description = "Base URL of the public API."
  value       = module.imagegen.api_url
}

output "webhook_url" {
  description = "URL fal.ai delivers results to (passed to fal per request by the dispatcher)."
  value       = module.imagegen.webhook_url
}

output "function_urls" {
  description = "Every function's URL."
  value       = module.imagegen.function_urls
}

output "images_bucket" {
  description = "Bucket of generated images."
  value       = module.imagegen.images_bucket
}

output "lora_bucket" {
  description = "Bucket of LoRA files."
  value       = module.imagegen.lora_bucket
}

output "dead_letter_audit_subscription" {
  description = "A week of dead-lettered generation requests."
  value       = module.imagegen.dead_letter_audit_subscription
}
