"""The public HTTP API, one module per resource.

Each module exports `HANDLERS` (endpoint name → handler) and `OPERATIONS` (its part of the
API description). Their rules live in `api.py`, which loads a module on its first request.
"""
