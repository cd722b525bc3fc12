"""Pub/Sub → Eventarc stand-in: pulls a subscription and pushes binary-mode CloudEvents.

In production Eventarc delivers each message to the dispatcher as a binary-mode CloudEvent
whose body is `{"message": {...}, "subscription": "..."}`, and acks it only on a 2xx. The
emulator has no Eventarc, so this relay does the same over synchronous pull (streaming
pull loses nacked messages under a retry policy on the emulator). A failed delivery is
nacked, and the subscription's retry policy spaces out the redeliveries.

Run: python -m infra.relay --project P --subscription S --topic T --target URL
"""

from __future__ import annotations

import argparse
import base64
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from google.cloud import pubsub_v1

log = logging.getLogger("relay")
EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def pull_waiting(subscriber: pubsub_v1.SubscriberClient, path: str) -> list[Any]:
    """One synchronous pull that waits for messages (the emulator loses nacked messages under
    streaming pull); [] when its deadline passes with none, which is normal."""
    try:
        response = subscriber.pull(
            subscription=path, max_messages=10, timeout=5.0, return_immediately=False
        )
    except Exception as exc:
        if "Deadline" not in type(exc).__name__:
            raise
        return []
    return list(response.received_messages)


def cloud_event(received: Any, project: str, topic: str, subscription_path: str):
    message = received.message
    publish_time = message.publish_time.isoformat().replace("+00:00", "Z")
    body = {
        "message": {
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "messageId": message.message_id,
            "message_id": message.message_id,
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": subscription_path,
    }
    headers = {
        "ce-id": message.message_id,
        "ce-specversion": "1.0",
        "ce-type": EVENT_TYPE,
        "ce-source": f"//pubsub.googleapis.com/projects/{project}/topics/{topic}",
        "ce-time": publish_time,
        "content-type": "application/json",
    }
    return headers, body


class Relay:
    def __init__(
        self, project: str, subscription: str, topic: str, target: str, concurrency: int = 16
    ) -> None:
        self.project, self.topic, self.target = project, topic, target
        self.subscriber = pubsub_v1.SubscriberClient()
        self.path = self.subscriber.subscription_path(project, subscription)
        self.http = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0))
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.capacity = threading.BoundedSemaphore(concurrency)
        self.stopping = threading.Event()

    def deliver(self, received: Any) -> None:
        try:
            headers, body = cloud_event(received, self.project, self.topic, self.path)
            try:
                status = self.http.post(self.target, json=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                log.warning("delivery of %s failed: %s", received.message.message_id, exc)
                status = 0
            if 200 <= status < 300:
                self.subscriber.acknowledge(subscription=self.path, ack_ids=[received.ack_id])
            else:
                log.info("nacking %s (HTTP %s)", received.message.message_id, status)
                self.subscriber.modify_ack_deadline(
                    subscription=self.path, ack_ids=[received.ack_id], ack_deadline_seconds=0
                )
        except Exception:
            log.exception("relay delivery error")
        finally:
            self.capacity.release()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                received_messages = pull_waiting(self.subscriber, self.path)
            except Exception as exc:
                if not self.stopping.is_set():
                    log.warning("pull failed: %s", exc)
                continue
            if not received_messages:
                # The emulator may answer an empty pull at once; don't spin on it.
                self.stopping.wait(0.02)
            for received in received_messages:
                self.capacity.acquire()
                self.pool.submit(self.deliver, received)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    relay = Relay(args.project, args.subscription, args.topic, args.target)
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    relay.run()


if __name__ == "__main__":
    main()
