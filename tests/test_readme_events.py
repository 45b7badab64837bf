"""The README's event receiver runs as printed, and its example events are events."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.events import EVENT_OBJECTS
from bridge.events_sender import OutgoingEvent
from bridge.webhook_endpoints import new_secret

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SECTION = README.split("## Receiving events", 1)[1].split("\n## ", 1)[0]


def _block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", SECTION, re.S)
    assert match, language
    return match.group(1)


def _load(code: str, path: Path) -> Any:
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("readme_receiver", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_receiver"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["readme_receiver"]
    return module


def test_the_receiver_accepts_a_signed_event_once_and_refuses_a_forged_one(
    tmp_path: Path,
) -> None:
    secret = new_secret()
    code = _block("python").replace('"whsec_..."', repr(secret))
    assert len(code.strip().splitlines()) <= 22
    receiver = _load(code, tmp_path / "readme_receiver.py")
    client = receiver.app.test_client()
    body = json.dumps({"id": "evt_1", "type": "contact.opted_in", "data": {"object": {"id": "c"}}})
    signed = OutgoingEvent("http://x", "evt_1", body, [secret], datetime.now(UTC)).headers()
    assert client.post("/bridge/events", data=body, headers=signed).status_code == 204
    assert client.post("/bridge/events", data=body, headers=signed).status_code == 204
    assert receiver.seen == {"evt_1"}
    forged = body.replace("contact.opted_in", "contact.opted_out")
    assert client.post("/bridge/events", data=forged, headers=signed).status_code == 400


def test_the_catalogue_shows_one_example_of_each_type() -> None:
    chunks = re.split(r"\n(?=\{)", _block("json").strip())
    examples = [json.loads(chunk) for chunk in chunks]
    assert [e["type"] for e in examples] == list(EVENT_OBJECTS)
    for example in examples:
        assert example["object"] == "event" and example["id"].startswith("evt_")
        assert example["data"]["object"]["object"] == EVENT_OBJECTS[example["type"]]
