# Enables the APIs a stack needs. Disabling an API on destroy would break anything else in
# the project that uses it (and disables dependent services), so destroy leaves them on.
resource "google_project_service" "this" {
  for_each = var.services

  project                    = var.project_id
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
