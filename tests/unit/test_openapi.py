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
    operations = [(op.method, op.path) for op in api.operations()]
    assert len(operations) == len(set(operations)), "an operation is described twice"
    assert set(operations) == _routes()


def test_document_is_openapi_3_1_and_json() -> None:
    document = openapi.build_document(api.operations(), "test")
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
    document = openapi.build_document(api.operations(), "test")
    text = json.dumps(document)
    schemas = document["components"]["schemas"]
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_every_operation_documents_the_errors_it_can_return() -> None:
    """What `make fuzz` checks answers against: a body means 400/413/415 are possible, an
    Idempotency-Key a 409, a write a 503; every error has the one ErrorBody shape."""
    document = openapi.build_document(api.operations(), "test")
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= set(responses), where
            if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
                assert "409" in responses, where
            if method != "get":
                assert "503" in responses, where
            for status, response in responses.items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (where, status)


def test_query_parameters_are_never_null() -> None:
    """`X | None = None` in a query model means "may be left out": no query string spells
    null, so the description offers no null to send."""
    document = openapi.build_document(api.operations(), "test")
    history = document["paths"]["/v1/images/generations"]["get"]["parameters"]
    for parameter in history:
        text = json.dumps(parameter["schema"])
        assert '"null"' not in text and '"default": null' not in text, parameter
    status = next(p for p in history if p["name"] == "status")
    assert status["schema"]["$ref"] == "#/components/schemas/GenerationStatus"


def test_seed_000s_lora_list_is_a_bare_list() -> None:
    document = openapi.build_document(api.operations(), "test")
    ok = document["paths"]["/api/get-lora-models"]["get"]["responses"]["200"]
    ref = ok["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["type"] == "array"
    assert schema["items"] == {"$ref": "#/components/schemas/LoraView"}
    generate = document["paths"]["/api/generate-image"]["post"]
    assert generate["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GenerationRequest"
    }
