"""`GET /openapi.json`: complete, true to the routes, and true to what the API answers."""

from __future__ import annotations

import re
from typing import Any, get_args

import jsonschema
from flask import Flask

from tests.factories import JsonClient
from tests.webhooks.conftest import ApiOrg
from webhooks.errors import ErrorType
from webhooks.openapi import TAGS


def _spec(client: JsonClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def _validator(spec: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_every_api_route_is_described_and_nothing_else(app: Flask, client: JsonClient) -> None:
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
    assert len(routes) == 36  # 23, the 10 of events out (DESIGN 5.8), the 3 of API keys


def test_every_operation_documents_its_parameters_bodies_and_errors(client: JsonClient) -> None:
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


def test_the_seed_models_are_named_components(client: JsonClient) -> None:
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


def test_the_document_states_the_servers_rules(client: JsonClient) -> None:
    spec = _spec(client)
    schemas = spec["components"]["schemas"]
    assert spec["servers"] and {t["name"] for t in spec["tags"]} == set(TAGS)
    assert {
        tag for item in spec["paths"].values() for op in item.values() for tag in op["tags"]
    } == set(TAGS)
    assert all(not re.search(r"[^A-Za-z]", name) for name in schemas)  # no Foo-Input, no Foo_1
    # a message needs text or media: {} and blank text alone are invalid, null is never text
    message = _validator(spec, "MessageCreate")
    assert not message.is_valid({})
    assert not message.is_valid({"text": " \t"})
    assert not message.is_valid({"text": None})
    assert message.is_valid({"text": " ", "media_urls": ["https://e.example/a.jpg"]})
    assert not _validator(spec, "MessageUpdate").is_valid({"text": None})
    # text fields refuse C0 control characters but tab, LF and CR
    assert not message.is_valid({"text": "bell \u0007"})
    assert message.is_valid({"text": "tab\tCR\rLF\n"})
    assert not _validator(spec, "UserCreate").is_valid({"name": "esc \u001b"})
    assert not _validator(spec, "ApiKeyCreate").is_valid({"label": "nul \u0000"})
    endpoint = _validator(spec, "WebhookEndpointCreate")
    hook = {"url": "https://app.example.com/hooks", "events": ["*"]}
    assert endpoint.is_valid(hook)
    assert not endpoint.is_valid(hook | {"description": "bell \u0007"})
    assert not endpoint.is_valid(hook | {"url": "https://app.example.com/\u0007"})
    phone = schemas["ContactCreate"]["properties"]["phone"]
    assert phone["format"] == "phone" and "E.164" in phone["description"]
    assert not _validator(spec, "ContactCreate").is_valid({"phone": "call me"})
    statuses = schemas["InboundSms"]["properties"]["status"]["enum"]
    assert statuses == ["received", "matched", "unmatched", "keyword"]
    assert set(schemas["ErrorDetail"]["properties"]["type"]["enum"]) == set(get_args(ErrorType))
    inbound = spec["paths"]["/v1/inbound"]["get"]
    before = next(p for p in inbound["parameters"] if p["name"] == "before")
    assert before["schema"]["pattern"] == "^in_[A-Za-z0-9]{1,60}$"
    # each list's cursor is an id of that list's objects
    cursors = {
        path: next(p for p in item["get"]["parameters"] if p["name"] == "before")["schema"]
        for path, item in spec["paths"].items()
        if "get" in item and any(p["name"] == "before" for p in item["get"]["parameters"])
    }
    assert cursors["/v1/events"]["pattern"] == "^evt_[A-Za-z0-9]{1,60}$"
    assert cursors["/v1/webhook_endpoints"]["pattern"] == "^we_[A-Za-z0-9]{1,60}$"
    assert cursors["/v1/webhook_endpoints/{endpoint_id}/attempts"]["pattern"].startswith("^wha_")
    assert "404" in inbound["responses"]


def test_every_answer_carries_x_request_id_and_every_body_its_cap(client: JsonClient) -> None:
    spec = _spec(client)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert any(p["name"] == "X-Request-ID" for p in op["parameters"]), (method, path)
            for response in op["responses"].values():
                assert response["headers"]["X-Request-ID"]["required"] is True
            if "requestBody" in op:
                assert "64 KiB" in op["requestBody"]["description"]
                assert "64 KiB" in op["responses"]["413"]["description"]
    assert "Retry-After" in spec["paths"]["/v1/threads"]["post"]["responses"]["429"]["headers"]


def test_links_name_real_operations_and_parameters(client: JsonClient) -> None:
    spec = _spec(client)
    operations = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    linked = set()
    for op in operations.values():
        for code, response in op["responses"].items():
            for link in response.get("links", {}).values():
                assert code.startswith("2")
                target = operations[link["operationId"]]
                names = {p["name"] for p in target["parameters"]}
                assert set(link["parameters"]) <= names, link
                assert all(v.startswith(("$response.body#/", "$request.path.")) for v in
                           link["parameters"].values())  # fmt: skip
                linked.add((op["operationId"], link["operationId"]))
    for pair in [("create_thread", "get_thread"), ("create_thread", "list_messages"),
                 ("create_thread", "add_subscriber"), ("post_message", "list_deliveries"),
                 ("post_message", "edit_message"), ("post_message", "cancel_message"),
                 ("create_contact", "get_contact"), ("get_channel", "list_channel_messages"),
                 ("create_user", "get_user"), ("create_api_key", "revoke_api_key")]:  # fmt: skip
        assert pair in linked


def test_answers_keep_to_the_headers_they_document(api: ApiOrg) -> None:
    kept = api.client.get("/v1/organization", headers=api.headers() | {"X-Request-ID": "req-1234"})
    assert kept.headers["X-Request-ID"] == "req-1234"
    replaced = api.client.get(
        "/v1/threads/thrd_none", headers=api.headers() | {"X-Request-ID": "no good"}
    )
    assert replaced.status_code == 404
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{8,200}", replaced.headers["X-Request-ID"])
