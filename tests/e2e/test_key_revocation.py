"""A revoked API key is refused at once by every web process (DESIGN 5.1): two gunicorn
processes (the Procfile's web line, twice) over one database, the key revoked through one of them
while both serve it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, Process, answers, environment, http, procfile, wait_for
from tests.services import RedisServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def two_web_processes(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    redis = RedisServer().start()
    env = environment(
        DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.sqlite3'}",
        REDIS_URL=redis.url,
        BRIDGE_INSTANCE_DIR=str(tmp_path / "instance"),
        WEB_CONCURRENCY="1",
    )
    processes: list[Process] = []
    try:
        subprocess.run([str(BIN / "bridge"), "db", "upgrade"], env=env, check=True, timeout=60)
        bases = []
        for name in ("web1", "web2"):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            web_env = {**env, "PORT": str(port), "PUBLIC_BASE_URL": base}
            processes.append(Process(name, procfile()["web"], web_env, tmp_path))
            bases.append(base)
        for base in bases:

            def healthy(b: str = base) -> bool:
                return answers(b + "/healthz") == 200

            wait_for(f"{base} to answer", healthy)
        yield env, bases
    finally:
        for process in processes:
            process.kill()
        redis.stop()


def test_a_key_revoked_through_one_process_is_refused_by_both_at_once(
    two_web_processes: tuple[dict[str, str], list[str]],
) -> None:
    env, bases = two_web_processes
    created = subprocess.run(
        [str(BIN / "bridge"), "org", "create", "Corner Shop", "--sender", "+16285550177"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    old = json.loads(created.stdout)["api_key"]

    def status(base: str, key: str) -> int:
        return http("GET", base + "/v1/organization", headers={"Authorization": f"Bearer {key}"})[0]

    code, new = http(
        "POST",
        bases[0] + "/v1/api_keys",
        {"label": "rotated"},
        {"Authorization": f"Bearer {old}"},
    )
    assert code == 201, new
    # Both processes have served both keys (anything they might keep, they keep now).
    for _ in range(3):
        assert [status(b, k) for b in bases for k in (old, new["api_key"])] == [200] * 4
    _, listed = http("GET", bases[1] + "/v1/api_keys", headers={"Authorization": f"Bearer {old}"})
    old_id = next(k["id"] for k in listed["data"] if k["label"] == "default")

    code, _ = http(
        "DELETE",
        f"{bases[1]}/v1/api_keys/{old_id}",
        headers={"Authorization": f"Bearer {new['api_key']}"},
    )
    assert code == 200
    # At once: the very next request to either process.
    assert [status(b, old) for b in bases] == [401, 401]
    assert [status(b, new["api_key"]) for b in bases] == [200, 200]
