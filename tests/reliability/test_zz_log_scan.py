"""Every log line the bridge's processes wrote during the reliability run: no full phone number,
no message text, no key, token or signing secret. (Named to run after the other reliability tests,
whose logs it reads; run alone, it makes some traffic of its own first.)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from tests.e2e.processes import wait_for
from tests.reliability.conftest import Record
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DIGITS = re.compile(r"\+?\d{7,15}")
# "worker: refusing to start:" and its "  SETTING: why" lines (bridge.settings.SettingsRefused).
REFUSAL = re.compile(r"^(\w+: )?refusing to start:$|^  [A-Z][A-Z0-9_]+: ")


def bridge_logs(system: System) -> dict[str, str]:
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(system.logs.glob("*.log"))
        if path.name.startswith(("web-", "worker-"))
    }


def some_traffic(system: System) -> None:
    """An SMS out to two contacts and a reply in, so that web and worker have logged something."""
    org = system.organization()
    channel_id, phones = system.channel(org, 2)
    system.ready(system.start("web", wait=False), system.start("worker", wait=False))
    message_id = system.publish(org, channel_id, "Your locker code is 8812")
    system.wait_settled([message_id], timeout=60)
    status, _ = system.inbound(phones[0], org.senders[0], "Thanks, picking it up tonight")
    assert status == 200
    wait_for("the reply's relay", lambda: len(system.standin.messages()) >= 3, timeout=60)


def test_no_log_line_holds_a_phone_number_a_message_text_or_a_secret(
    system: System, record: Record
) -> None:
    logs = bridge_logs(system)
    if not any(name.startswith("worker-") for name in logs):
        some_traffic(system)
        system.stop_processes()
        logs = bridge_logs(system)
    lines = [line for text in logs.values() for line in text.splitlines() if line.strip()]
    numbers = {n for p in system.phones for n in (p, p[1:], p[2:])}
    # Texts grouped by their first four characters: a line is searched for the texts of a group
    # only when it holds that prefix (thousands of texts times thousands of lines otherwise).
    texts: dict[str, list[str]] = defaultdict(list)
    for text in system.texts:
        texts[text[:4]].append(text)
    leaks = []
    for line in lines:
        leaks += [("a phone number", line[:300]) for n in DIGITS.findall(line) if n in numbers]
        for prefix, group in texts.items():
            if prefix in line:
                leaks += [("a message text", line[:300]) for t in group if t in line]
        leaks += [(name, line[:300]) for name, v in system.secrets.items() if v in line]
        if re.search(r"brk_(?!\[redacted\])", line):
            leaks.append(("an API key", line[:300]))
    # A refused start is the one thing a process prints as plain lines, for the operator to read in
    # the deploy log (issue 10): "worker: refusing to start:" and one indented line per setting.
    refusals = [line for line in lines if REFUSAL.match(line)]
    logged = [line for line in lines if not REFUSAL.match(line)]
    not_json = [line[:200] for line in logged if not line.lstrip().startswith("{")]

    record.injected = (
        f"scan of {len(lines)} log lines from {len(logs)} web and worker processes for "
        f"{len(system.phones)} phone numbers, {len(system.texts)} message texts, "
        f"{len(system.secrets)} secrets and API keys"
    )
    record.counted = {
        "lines": len(lines),
        "leaks": len(leaks),
        "not_json": len(not_json),
        "refusal_lines": len(refusals),
    }
    assert len(lines) > 10, "the processes logged almost nothing: nothing was scanned"
    assert not leaks, leaks[:5]
    assert not not_json, not_json[:5]
    for line in logged:
        assert isinstance(json.loads(line), dict)
