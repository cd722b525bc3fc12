#!/usr/bin/env bash
# Gives the Pub/Sub subscription behind an Eventarc trigger a dead-letter policy and retry
# backoff, and lets the Pub/Sub service agent consume from it (dead-lettering needs the agent
# to hold roles/pubsub.subscriber on the source subscription and roles/pubsub.publisher on the
# dead-letter topic; the latter is granted in Terraform). Run by Terraform (modules/function);
# idempotent, so re-running it changes nothing.
#
# Needs: gcloud, authenticated as the identity running Terraform.
set -euo pipefail

: "${PROJECT:?}" "${TRIGGER:?}" "${DEAD_LETTER_TOPIC:?}" "${MAX_DELIVERY_ATTEMPTS:?}"
: "${MIN_RETRY_DELAY:?}" "${MAX_RETRY_DELAY:?}" "${PUBSUB_SERVICE_AGENT:?}"

subscription=""
# A new trigger's transport can take a moment to appear.
for _ in 1 2 3 4 5 6; do
  subscription="$(gcloud eventarc triggers describe "$TRIGGER" --project="$PROJECT" \
    --format='value(transport.pubsub.subscription)')"
  [[ -n "$subscription" ]] && break
  sleep 10
done
if [[ -z "$subscription" ]]; then
  echo "error: trigger $TRIGGER has no Pub/Sub subscription" >&2
  exit 1
fi

gcloud pubsub subscriptions add-iam-policy-binding "$subscription" --project="$PROJECT" \
  --member="serviceAccount:${PUBSUB_SERVICE_AGENT}" --role="roles/pubsub.subscriber" \
  --quiet >/dev/null

gcloud pubsub subscriptions update "$subscription" --project="$PROJECT" \
  --dead-letter-topic="$DEAD_LETTER_TOPIC" \
  --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS" \
  --min-retry-delay="$MIN_RETRY_DELAY" \
  --max-retry-delay="$MAX_RETRY_DELAY" \
  --quiet

echo "dead-letter policy attached: $subscription -> $DEAD_LETTER_TOPIC (max $MAX_DELIVERY_ATTEMPTS attempts)"
