"""`GET /openapi.json`: complete, true to the routes, and true to what the API answers."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from flask import Flask
from flask.testing import FlaskClient

from tests.webhooks.conftest import ApiOrg


def _spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def _validator(spec: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_every_api_route_is_described_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    spec = _spec(client)
    assert spec["openapi"].startswith("3.1")
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert described == routes
    assert len(routes) == 26


def test_every_operation_documents_its_parameters_bodies_and_errors(client: FlaskClient) -> None:
    spec = _spec(client)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            assert {"401", "403", "429"} <= set(responses), where
            assert any(code.startswith("2") for code in responses), where
            for code, response in responses.items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                if not code.startswith("2"):
                    assert ref == "#/components/schemas/Error", where
            path_params = set(re.findall(r"{(\w+)}", path))
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == path_params, where
            if path_params:
                assert "404" in responses, where
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= set(responses), where
            if any(p["in"] == "query" for p in op["parameters"]):
                assert "422" in responses, where
    limit = next(
        p
        for p in spec["paths"]["/v1/threads/{thread_id}/messages"]["get"]["parameters"]
        if p["name"] == "limit"
    )
    assert limit["schema"]["minimum"] == 1
    assert limit["schema"]["maximum"] == 150
    assert limit["schema"]["default"] == 50


def test_the_seed_models_are_named_components(client: FlaskClient) -> None:
    schemas = _spec(client)["components"]["schemas"]
    for name in ["Thread", "Message", "Subscriber", "Channel", "Delivery", "InboundSms", "User",
                 "Contact", "Organization", "Error"]:  # fmt: skip
        assert name in schemas
        jsonschema.Draft202012Validator.check_schema(schemas[name])
    assert schemas["Channel"]["properties"]["object"]["const"] == "channel"
    assert schemas["Subscriber"]["properties"]["id"]["type"] == "string"
    assert "from" in schemas["Delivery"]["properties"]
    assert schemas["Thread"]["additionalProperties"] is False
    assert set(schemas["Thread"]["required"]) == set(schemas["Thread"]["properties"])
    reactions = schemas["Message"]["properties"]["reactions"]["items"]["$ref"]
    reaction = schemas[reactions.rsplit("/", 1)[1]]
    assert set(reaction["properties"]) == {"emoji", "subscriber_id", "created_at"}


def test_real_responses_match_their_components(api: ApiOrg) -> None:
    spec = _spec(api.client)
    thread = api.post(
        "/v1/threads",
        {"resource_id": "order-5", "subscribers": [{"type": "contact", "phone": "+14155550123"}]},
    ).json
    message = api.post(f"/v1/threads/{thread['id']}/messages", {"text": "hi"}).json
    checks = [
        ("Thread", api.get(f"/v1/threads/{thread['id']}").json),
        ("Message", message),
        ("Channel", api.get(f"/v1/channels/{message['channel_id']}").json),
        ("DeliveryList", api.get(f"/v1/messages/{message['id']}/deliveries").json),
        ("Organization", api.get("/v1/organization").json),
        ("Error", api.get("/v1/threads/thrd_none").json),
    ]
    for component, body in checks:
        _validator(spec, component).validate(body)
    broken = dict(checks[0][1], surprise=1)
    assert not _validator(spec, "Thread").is_valid(broken)
