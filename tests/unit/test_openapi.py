"""The API description is generated from the code and covers exactly the router's routes."""

from __future__ import annotations

import json

from imagegen import api, openapi


def _routes() -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in api.URL_MAP.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_exactly_one_operation() -> None:
    operations = [(op.method, op.path) for op in api.OPERATIONS]
    assert len(operations) == len(set(operations)), "an operation is described twice"
    assert set(operations) == _routes()


def test_document_is_openapi_3_1_and_json() -> None:
    document = openapi.build_document(api.OPERATIONS, "test")
    assert document["openapi"] == "3.1.0"
    json.dumps(document)
    create = document["paths"]["/v1/images/generations"]["post"]
    schema_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = schema_ref.rsplit("/", 1)[1]
    request_schema = document["components"]["schemas"][name]
    # The same model that validates requests: its camelCase names and its bounds.
    assert request_schema["additionalProperties"] is False
    assert "numImages" in request_schema["properties"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_every_reference_resolves() -> None:
    document = openapi.build_document(api.OPERATIONS, "test")
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
