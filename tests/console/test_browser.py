"""The console in a real browser (Debian's chromium through Playwright) against the real processes.

One set of processes for the module: the Procfile's release, web (gunicorn) and worker, over
PostgreSQL and Redis, with the Twilio stand-in as Twilio (the stack of tests/e2e). Without any
chromium these tests skip, saying why, except in CI (`CI` or `REQUIRE_POSTGRES=1`), where they fail.
On a failure, every console page is saved as a screenshot at 1280 and 375 px wide.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import http, wait_for
from tests.e2e.test_end_to_end import Stack, stack  # noqa: F401  (the module's processes)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SENDER = "+16285550181"
ANN = "+14155550171"
ANN_NATIONAL = "(415) 555-0171"
BOB = "+14155550172"
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 375, "height": 740}
# The page polls every second (asserted below); the wait is generous so a loaded machine does not
# fail the test: timing targets belong in bench/, not in assertions (CONTRIBUTING).
LIVE_TIMEOUT_MS = 10_000
PAGES = ["/console/", "/console/unmatched", "/console/failed", "/console/contacts"]


def _chromium() -> str:
    """The system chromium, or skip (fail in CI) saying why."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    reason = None
    if path is None:
        reason = "no chromium: install Debian's package (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is not None:
        if os.environ.get("CI") or os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for the module."""
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class World:
    """An organization made with the CLI, a conversation with Ann and Bob, and a second one."""

    stack: Stack
    key: str
    organization_id: str
    channel_id: str
    thread_id: str
    other_channel_id: str

    def url(self, path: str) -> str:
        return self.stack.base + path

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.stack.api(method, path, body, self.key)


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:  # noqa: F811
    created = json.loads(stack.cli("org", "create", "Acme Parcels", "--sender", SENDER))
    key = created["api_key"]
    status, thread = stack.api(
        "POST",
        "/v1/threads",
        {
            "resource_id": "parcel-42",
            "name": "Parcel 42",
            "subscribers": [{"type": "contact", "phone": ANN, "name": "Ann Ames"}],
        },
        key,
    )
    assert status == 201, thread
    status, message = stack.api(
        "POST", f"/v1/threads/{thread['id']}/messages", {"text": "Parcel 42 is on its way"}, key
    )
    assert status == 201, message
    status, bob_thread = stack.api(
        "POST",
        "/v1/threads",
        {
            "resource_id": "parcel-43",
            "subscribers": [{"type": "contact", "phone": BOB, "name": "Bob Burr"}],
        },
        key,
    )
    assert status == 201, bob_thread
    stack.api("POST", f"/v1/threads/{bob_thread['id']}/messages", {"text": "Hello Bob"}, key)
    other = json.loads(stack.cli("org", "create", "Other Org", "--sender", "+16285550182"))
    status, other_thread = stack.api(
        "POST",
        "/v1/threads",
        {"resource_id": "x-1", "subscribers": [{"type": "contact", "phone": ANN}]},
        other["api_key"],
    )
    status, other_message = stack.api(
        "POST", f"/v1/threads/{other_thread['id']}/messages", {"text": "theirs"}, other["api_key"]
    )
    assert status == 201, other_message
    return World(
        stack,
        key,
        created["id"],
        message["channel_id"],
        thread["id"],
        other_message["channel_id"],
    )


@pytest.fixture
def page(
    browser: Any, world: World, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 px; screenshots of every page on failure."""
    context = browser.new_context(viewport=WIDE)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        _screenshots(tab, world, Path(os.environ.get("CONSOLE_FAILURE_SHOTS", tmp_path)))
    context.close()


def _screenshots(tab: Any, world: World, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(folder / "at-failure.png"), full_page=True)
    paths = [*PAGES, f"/console/channels/{world.channel_id}"]
    for size in (WIDE, NARROW):
        tab.set_viewport_size(size)
        for path in paths:
            tab.goto(world.url(path))
            name = path.strip("/").replace("/", "-") or "console"
            tab.screenshot(path=str(folder / f"{name}-{size['width']}.png"), full_page=True)
    print(f"console screenshots saved in {folder}")


def sign_in(tab: Any, world: World, key: str | None = None) -> None:
    tab.goto(world.url("/console/sign-in"))
    tab.get_by_label("API key").fill(key or world.key)
    tab.get_by_role("button", name="Sign in").click()


def signed_in(tab: Any, world: World) -> None:
    sign_in(tab, world)
    tab.get_by_role("button", name="Continue").click()
    tab.wait_for_url("**/console/")


def open_conversation(tab: Any, world: World) -> None:
    tab.goto(world.url(f"/console/channels/{world.channel_id}"))


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def test_a_wrong_key_is_refused(page: Any, world: World) -> None:
    sign_in(page, world, "brk_this-is-not-a-key")
    expect(page.get_by_role("alert")).to_contain_text("unknown or has been revoked")
    assert page.url.endswith("/console/sign-in")
    page.goto(world.url("/console/"))
    assert page.url.endswith("/console/sign-in")


def test_sign_in_and_open_a_conversation(page: Any, world: World) -> None:
    sign_in(page, world)
    expect(page.get_by_role("heading", level=1)).to_have_text("Who are you acting as?")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Inbox")
    page.get_by_role("link", name="Ann Ames").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Ann Ames")
    expect(page.locator(".msg.ours").first).to_contain_text("Parcel 42 is on its way")


def test_an_inbound_sms_appears_without_a_reload(page: Any, world: World) -> None:
    signed_in(page, world)
    open_conversation(page, world)
    assert page.locator("[data-live]").get_attribute("data-poll") == "1"
    page.evaluate("window.notReloaded = true")
    world.stack.cli(
        "sms", "simulate", "--from", ANN, "--to", SENDER, "--body", "Leave it at the door",
        "--url", world.stack.base,
    )  # fmt: skip
    expect(page.locator(".msg.theirs", has_text="Leave it at the door")).to_be_visible(
        timeout=LIVE_TIMEOUT_MS
    )
    assert page.evaluate("window.notReloaded") is True


def test_a_reply_reaches_twilio_and_shows_delivered(page: Any, world: World) -> None:
    signed_in(page, world)
    open_conversation(page, world)
    page.get_by_label("Message, sent as Acme Parcels").fill("We will, thank you")
    page.get_by_role("button", name="Send").click()
    mine = page.locator(".msg.ours", has_text="We will, thank you")
    expect(mine).to_be_visible()
    sent = wait_for(
        "the reply at the stand-in",
        lambda: [m for m in world.stack.standin_messages() if m["body"] == "We will, thank you"],
    )
    assert [m["to"] for m in sent] == [ANN]
    # The status callbacks (sent, delivered) reach the page without a reload.
    expect(mine.locator(".dlv-delivered")).to_contain_text("Ann Ames: delivered", timeout=15_000)
    shot = os.environ.get("CONSOLE_SCREENSHOT")
    if shot:
        page.locator(".reply").scroll_into_view_if_needed()
        page.screenshot(path=shot, full_page=True)


def test_a_scheduled_message_is_canceled(page: Any, world: World) -> None:
    later = int(time.time()) + 3600
    status, message = world.api(
        "POST",
        f"/v1/threads/{world.thread_id}/messages",
        {"text": "Pickup reminder for tomorrow", "publish_to_channel_at": later},
    )
    assert status == 201, message
    signed_in(page, world)
    open_conversation(page, world)
    scheduled = page.locator(".pending li", has_text="Pickup reminder for tomorrow")
    expect(scheduled).to_be_visible()
    scheduled.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flashes")).to_contain_text("canceled")
    expect(page.locator(".pending li", has_text="Pickup reminder for tomorrow")).to_have_count(0)
    status, channel = world.api("GET", f"/v1/channels/{world.channel_id}")
    assert message["id"] not in [m["id"] for m in channel["pending_messages"]]


def test_a_failed_delivery_shows_its_reason(page: Any, world: World) -> None:
    http("POST", world.stack.standin + "/_standin/fail", {"count": 1, "status": 400, "code": 21614})
    status, message = world.api(
        "POST", f"/v1/threads/{world.thread_id}/messages", {"text": "Your code is 1234"}
    )
    assert status == 201, message

    def failed() -> bool:
        data = world.api("GET", f"/v1/messages/{message['id']}/deliveries")[1]["data"]
        return [d["status"] for d in data] == ["failed"]

    wait_for("the delivery to fail", failed)
    signed_in(page, world)
    page.get_by_role("link", name="Failed deliveries").click()
    item = page.locator(".cards li", has_text="not a mobile number")
    expect(item).to_contain_text("Ann Ames")
    expect(item).to_contain_text("21614")
    item.get_by_role("link", name="Open the conversation").click()
    mark = page.locator(".msg.ours", has_text="Your code is 1234").locator(".dlv-failed")
    expect(mark.locator("summary")).to_have_attribute(
        "title", "The recipient's number is not a mobile number"
    )
    mark.locator("summary").click()  # a tap opens the reason on a phone
    expect(mark.locator(".reason")).to_be_visible()


def test_search_finds_a_contact_by_a_national_format_number(page: Any, world: World) -> None:
    signed_in(page, world)
    page.get_by_label("Find a contact by name or phone number").fill(ANN_NATIONAL)
    page.get_by_role("button", name="Search").click()
    results = page.locator(".inbox li")
    expect(results).to_have_count(1)
    expect(results).to_contain_text("Ann Ames")


def test_a_form_without_its_csrf_token_is_refused(page: Any, world: World) -> None:
    signed_in(page, world)
    open_conversation(page, world)
    page.locator(".reply input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Message, sent as Acme Parcels").fill("forged reply")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("The form could not be accepted")
    _, channel = world.api("GET", f"/v1/channels/{world.channel_id}")
    assert "forged reply" not in [m["text"] for m in channel["recent_messages"]]


def test_another_organizations_channel_is_404(page: Any, world: World) -> None:
    signed_in(page, world)
    response = page.goto(world.url(f"/console/channels/{world.other_channel_id}"))
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")


def _tab_to(page: Any, selector: str, limit: int = 150) -> None:
    """Press Tab until the element matching `selector` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), f"{selector} has no visible focus"
            return
    raise AssertionError(f"Tab never reached {selector}")


def _keyboard_walk(page: Any, world: World, text: str) -> None:
    page.goto(world.url("/console/sign-in"))
    _tab_to(page, "#api_key")
    page.keyboard.type(world.key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/act-as")
    _tab_to(page, "button[type=submit]:not(.link)")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/")
    _tab_to(page, f"#open-{world.channel_id}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/channels/{world.channel_id}")
    _tab_to(page, "#text")
    page.keyboard.type(text)
    _tab_to(page, ".reply button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator(".msg.ours", has_text=text)).to_be_visible()


def test_keyboard_only_sign_in_inbox_conversation_reply(page: Any, world: World) -> None:
    _keyboard_walk(page, world, "Typed with the keyboard alone")


def _no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"{page.url} is {width} px wide at {NARROW['width']} px"


def test_375_px_wide_with_no_horizontal_scrolling(page: Any, world: World) -> None:
    page.set_viewport_size(NARROW)
    page.goto(world.url("/console/sign-in"))
    _no_horizontal_scroll(page)
    _keyboard_walk(page, world, "Typed on a narrow screen")
    _no_horizontal_scroll(page)
    for path in [*PAGES, "/console/act-as"]:
        page.goto(world.url(path))
        _no_horizontal_scroll(page)
