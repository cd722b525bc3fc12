output "name" {
  description = "The function's (and its Cloud Run service's) name."
  value       = google_cloudfunctions2_function.this.name
}

output "uri" {
  description = "The HTTPS URL of the function's Cloud Run service."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "trigger" {
  description = "The Eventarc trigger's resource name (null for HTTP functions)."
  value       = try(google_cloudfunctions2_function.this.event_trigger[0].trigger, null)
}
