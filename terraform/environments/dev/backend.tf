# State lives in a GCS bucket of the environment's project (created once, DEPLOY.md step 2).
# The bucket is given at init time, so this file names no project:
#   terraform init -backend-config="bucket=<project>-tfstate"
terraform {
  backend "gcs" {
    prefix = "imagegen/dev"
  }
}
