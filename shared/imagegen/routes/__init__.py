"""The public HTTP API, one module per resource.

Each module exports `RULES` (werkzeug rules whose endpoint names are unique across
modules) and `HANDLERS` (endpoint name → handler). `api.py` joins them into one router.
"""
