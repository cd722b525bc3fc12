"""Loaded as `sitecustomize` (through PYTHONPATH) by `make bench`'s cold starts: see
deployment_only.py."""

import deployment_only  # noqa: F401 - installs itself
