"""Pydantic models at every edge: HTTP bodies, stored records, Pub/Sub and fal events."""
