"""Every request the adapter sends is one Twilio's own OpenAPI description (API v2010) defines.

The description is Twilio's own file, kept unchanged as a test fixture with its MIT licence beside
it (`tests/fixtures/twilio_openapi/`). The stand-in's answers are checked against it too, so the
adapter is tested against answers shaped like Twilio's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft7Validator, FormatChecker

from bridge.settings import load_settings
from bridge.twilio_client import OutgoingSms, TwilioSender, build_sender
from tests.standin.twilio import RecordedRequest, TwilioStandIn

SPEC_NAME = "twilio_api_v2010.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
FORM = "application/x-www-form-urlencoded"

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "openapi-test-token"
SENDER = "+15005550006"
CONTACT = "+15552345678"
SERVICE_SID = "MG" + "c" * 32
CALLBACK = "https://bridge.example.com/twilio/status?d=dlv_01HZX"
MEDIA = tuple(f"https://cdn.example.com/media/{n}.jpg" for n in range(3))
LONG_TEXT = ("Your delivery window has changed. " * 60)[:1600]

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def spec_path() -> Path:
    """Twilio's description, kept as a test fixture with its MIT licence beside it."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "twilio_openapi" / SPEC_NAME


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with spec_path().open(encoding="utf-8") as file:
        loaded: dict[str, Any] = json.load(file)
    return loaded


# -- turning OpenAPI 3.0 into JSON Schema -------------------------------------------------------

formats = FormatChecker(formats=())


@formats.checks("uri")
def is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc) and not re.search(r"\s", value)


@formats.checks("phone-number")
def is_phone_number(value: object) -> bool:
    # What the bridge sends is E.164; Twilio also accepts channel addresses (whatsapp:+1...).
    return not isinstance(value, str) or bool(E164.match(value) or re.match(r"^[a-z]+:.+", value))


@formats.checks("date-time-rfc-2822", raises=(TypeError, ValueError))
def is_rfc2822(value: object) -> bool:
    return not isinstance(value, str) or parsedate_to_datetime(value) is not None


# Twilio's answers mark paging links `format: uri` but send them relative (its own examples do).
answer_formats = FormatChecker(formats=())
answer_formats.checks("date-time-rfc-2822", raises=(TypeError, ValueError))(is_rfc2822)
answer_formats.checks("phone-number")(is_phone_number)


@answer_formats.checks("uri")
def is_uri_reference(value: object) -> bool:
    return not isinstance(value, str) or is_uri(value) or value.startswith("/")


def json_schema(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as JSON Schema: OpenAPI's `nullable` spelled out, `#/components` reachable."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: convert(value) for key, value in node.items()}
        if node.pop("nullable", False):
            if "$ref" in node:
                return {"anyOf": [{"$ref": node.pop("$ref")}, {"type": "null"}], **node}
            if "type" in node:
                node["type"] = [node["type"], "null"]
        return node

    converted: dict[str, Any] = convert(schema)
    converted["components"] = convert(spec["components"])
    return converted


def schema_type(spec: dict[str, Any], node: dict[str, Any]) -> Any:
    """The `type` of a schema node, following `$ref`s within the description."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node.get("type")


def typed_form(
    spec: dict[str, Any], schema: dict[str, Any], form: dict[str, list[str]]
) -> dict[str, Any]:
    """Read a form as the schema types it: repeated fields become arrays, numbers numbers."""

    def cast(kind: Any, value: str) -> Any:
        if kind == "integer" and re.fullmatch(r"-?\d+", value):
            return int(value)
        if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", value):
            return float(value)
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
        return value

    typed: dict[str, Any] = {}
    for name, values in form.items():
        prop = schema["properties"].get(name)
        if prop is None:
            typed[name] = values[0] if len(values) == 1 else values  # caught as undefined
            continue
        kind = schema_type(spec, prop)
        if kind == "array":
            item_kind = schema_type(spec, prop["items"])
            typed[name] = [cast(item_kind, value) for value in values]
        else:
            # a scalar sent twice stays a list, which the schema rejects
            typed[name] = cast(kind, values[0]) if len(values) == 1 else values
    return typed


class CreateMessageContract:
    """Twilio's CreateMessage operation, as a checker of recorded requests."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.operation = spec["paths"][MESSAGES_PATH]["post"]
        assert self.operation["operationId"] == "CreateMessage"
        self.body_schema = self.operation["requestBody"]["content"][FORM]["schema"]
        strict = {**self.body_schema, "additionalProperties": False}
        self.body = Draft7Validator(json_schema(spec, strict), format_checker=formats)
        (account_sid,) = [p for p in self.operation["parameters"] if p["name"] == "AccountSid"]
        self.account_sid = Draft7Validator(account_sid["schema"])
        template = re.escape(MESSAGES_PATH).replace(r"\{AccountSid\}", "(?P<AccountSid>[^/]+)")
        self.path = re.compile(f"^{template}$")

    def problems(self, request: RecordedRequest) -> list[str]:
        """Everything about `request` that Twilio's description does not allow."""
        found: list[str] = []
        if request.method != "POST":
            found.append(f"method {request.method}")
        match = self.path.match(request.path)
        if match is None:
            return [*found, f"path {request.path} is not {MESSAGES_PATH}"]
        found += [f"AccountSid: {e.message}" for e in self.account_sid.iter_errors(match[1])]
        if request.headers.get("Content-Type", "").split(";")[0] != FORM:
            found.append(f"content type {request.headers.get('Content-Type')}")
        typed = typed_form(self.spec, self.body_schema, request.form)
        found += [
            f"{'/'.join(map(str, e.absolute_path)) or 'body'}: {e.message}"
            for e in self.body.iter_errors(typed)
        ]
        # Rules the description states in words only.
        if "From" not in typed and "MessagingServiceSid" not in typed:
            found.append("neither From nor MessagingServiceSid")
        if "Body" not in typed and "MediaUrl" not in typed and "ContentSid" not in typed:
            found.append("neither Body nor MediaUrl")
        # MediaUrl items carry `x-twilio: ignoreFormat`; the bridge promises https URIs anyway.
        media = typed.get("MediaUrl", [])
        for url in media if isinstance(media, list) else [media]:
            if not (is_uri(url) and urlsplit(str(url)).scheme == "https"):
                found.append(f"MediaUrl {url!r} is not an https URI")
        callback = typed.get("StatusCallback")
        if callback is not None and urlsplit(str(callback)).scheme not in ("http", "https"):
            found.append("StatusCallback is not an http(s) URI")
        return found


@pytest.fixture(scope="module")
def contract(spec: dict[str, Any]) -> CreateMessageContract:
    return CreateMessageContract(spec)


# -- the requests the adapter sends --------------------------------------------------------------

KINDS_OF_SEND = {
    "sms": OutgoingSms(
        to=CONTACT, from_=SENDER, body="Your order has shipped", status_callback=CALLBACK
    ),
    "sms with validity": OutgoingSms(
        to=CONTACT,
        from_=SENDER,
        body="Pickup at 5",
        status_callback=CALLBACK,
        validity_period=14400,
    ),
    "mms with three media": OutgoingSms(
        to=CONTACT, from_=SENDER, body="Photos of the damage", media_urls=MEDIA
    ),
    "mms without text": OutgoingSms(to=CONTACT, from_=SENDER, body="", media_urls=MEDIA[:1]),
    "messaging service": OutgoingSms(
        to=CONTACT, messaging_service_sid=SERVICE_SID, body="Hi", status_callback=CALLBACK
    ),
    "messaging service with sender": OutgoingSms(
        to=CONTACT, from_=SENDER, messaging_service_sid=SERVICE_SID, body="Hi"
    ),
    "long body": OutgoingSms(to=CONTACT, from_=SENDER, body=LONG_TEXT, validity_period=1),
    "unicode body": OutgoingSms(to=CONTACT, from_=SENDER, body="Jane: Grüße 👋 " * 20),
}


@pytest.fixture(scope="module")
def standin() -> Iterator[TwilioStandIn]:
    with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN).start() as twilio:
        yield twilio


@pytest.fixture(scope="module")
def sent(standin: TwilioStandIn) -> dict[str, RecordedRequest]:
    """Send every kind of SMS once through the adapter; the requests the stand-in recorded."""
    settings = load_settings(
        {},
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url=standin.base_url,
    )
    sender = build_sender(settings)
    assert isinstance(sender, TwilioSender)
    recorded: dict[str, RecordedRequest] = {}
    try:
        for kind, sms in KINDS_OF_SEND.items():
            sid = sender.send(sms).sid
            (recorded[kind],) = [r for r in standin.requests if r.sid == sid]
    finally:
        sender.close()
    return recorded


@pytest.mark.parametrize("kind", KINDS_OF_SEND)
def test_every_request_the_adapter_sends_is_a_twilio_create_message(
    contract: CreateMessageContract, sent: dict[str, RecordedRequest], kind: str
) -> None:
    assert contract.problems(sent[kind]) == []


def test_repeated_media_urls_are_an_array_as_the_description_says(
    contract: CreateMessageContract, sent: dict[str, RecordedRequest]
) -> None:
    typed = typed_form(contract.spec, contract.body_schema, sent["mms with three media"].form)

    assert typed["MediaUrl"] == list(MEDIA)
    long_body = typed_form(contract.spec, contract.body_schema, sent["long body"].form)
    assert long_body["ValidityPeriod"] == 1
    assert len(long_body["Body"]) == 1600


# The checker has teeth: requests Twilio's description refuses are refused.
@pytest.mark.parametrize(
    ("form", "complaint"),
    [
        ({"From": [SENDER], "Body": ["x"]}, "'To' is a required property"),
        ({"To": [CONTACT], "From": [SENDER], "Body": ["x"], "Bogus": ["1"]}, "Additional"),
        ({"To": [CONTACT], "From": [SENDER], "Body": ["x"], "StatusCallback": ["no"]}, "uri"),
        ({"To": [CONTACT], "From": [SENDER], "Body": ["x"], "ValidityPeriod": ["4h"]}, "integer"),
        ({"To": ["555 1234"], "From": [SENDER], "Body": ["x"]}, "phone-number"),
        ({"To": [CONTACT], "From": [SENDER], "Body": ["x", "y"]}, "is not of type 'string'"),
        ({"To": [CONTACT], "MessagingServiceSid": ["MG1"], "Body": ["x"]}, "does not match"),
        ({"To": [CONTACT], "Body": ["x"]}, "neither From nor MessagingServiceSid"),
        ({"To": [CONTACT], "From": [SENDER]}, "neither Body nor MediaUrl"),
        ({"To": [CONTACT], "From": [SENDER], "MediaUrl": ["http://x.example/a"]}, "https"),
    ],
)
def test_the_contract_refuses_what_twilio_refuses(
    contract: CreateMessageContract, form: dict[str, list[str]], complaint: str
) -> None:
    request = RecordedRequest(
        received_at=0.0,
        method="POST",
        path=f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        form=form,
        headers={"Content-Type": FORM},
        auth=None,
        auth_ok=True,
        status=201,
        sid=None,
        error_code=None,
    )

    problems = contract.problems(request)

    assert any(complaint in problem for problem in problems), problems


def test_the_contract_checks_the_account_sid_in_the_path(contract: CreateMessageContract) -> None:
    request = RecordedRequest(
        0.0,
        "POST",
        "/2010-04-01/Accounts/AC123/Messages.json",
        {"To": [CONTACT], "From": [SENDER], "Body": ["x"]},
        {"Content-Type": FORM},
        None,
        True,
        201,
        None,
        None,
    )

    assert any("AccountSid" in problem for problem in contract.problems(request))


# -- the stand-in's answers ---------------------------------------------------------------------


def response_validator(spec: dict[str, Any], method: str, status: str) -> Draft7Validator:
    operation = spec["paths"][MESSAGES_PATH][method]
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    return Draft7Validator(json_schema(spec, schema), format_checker=answer_formats)


def test_the_standins_answers_are_shaped_like_twilios(
    spec: dict[str, Any], standin: TwilioStandIn
) -> None:
    with requests.Session() as http:
        http.auth = (ACCOUNT_SID, AUTH_TOKEN)
        url = standin.messages_url
        created = [
            http.post(url, data={"To": CONTACT, "From": SENDER, "Body": "x"}, timeout=5),
            http.post(
                url,
                data={"To": CONTACT, "MessagingServiceSid": SERVICE_SID, "MediaUrl": MEDIA},
                timeout=5,
            ),
        ]
        query: dict[str, str | int] = {"To": CONTACT, "PageSize": 1}
        listed = http.get(url, params=query, timeout=5)

    create_schema = response_validator(spec, "post", "201")
    for answer in created:
        assert answer.status_code == 201
        assert [e.message for e in create_schema.iter_errors(answer.json())] == []
    assert listed.status_code == 200
    page = listed.json()
    assert [e.message for e in response_validator(spec, "get", "200").iter_errors(page)] == []
    # twilio-python finds the records under the one key that is not paging metadata.
    list_schema = spec["paths"][MESSAGES_PATH]["get"]["responses"]["200"]["content"]
    assert set(page) == set(list_schema["application/json"]["schema"]["properties"])
