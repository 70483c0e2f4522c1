"""@segment/analytics-node (npm, pinned in tests/js/package.json) against a real `trackyard serve`.

tests/js/node-scenario.mjs sends the shared scenario with the unmodified SDK (15 messages
per `/v1/batch` request, several in flight, `node-next-…` messageIds, Basic auth, `_metadata`)
and prints every message as the SDK delivered it; trackyard must have stored each one once,
unchanged.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.conftest import REPO, Server, missing_service, require_binary
from tests.e2e.sdk_support import (
    BURST,
    SCENARIO_CALLS,
    assert_all_match,
    assert_scenario_shape,
    wait_for_message_ids,
)

JS = REPO / "tests" / "js"
SCRIPT = JS / "node-scenario.mjs"


def node_sdk_version() -> str:
    package = JS / "node_modules" / "@segment" / "analytics-node" / "package.json"
    if not package.is_file():
        missing_service(
            "tests/js/node_modules is missing: run scripts/ensure-test-services.sh (npm ci in tests/js)"
        )
    return json.loads(package.read_text())["version"]


def run_node_scenario(server: Server, burst: int = BURST) -> dict[str, Any]:
    node = require_binary("node")
    result = subprocess.run(
        [node, str(SCRIPT), server.url, server.write_key, str(burst)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"node scenario failed ({result.returncode}):\n{result.stderr}\n{result.stdout[:2000]}"
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_node_sdk_scenario_is_stored_field_by_field(server: Server) -> None:
    version = node_sdk_version()
    report = run_node_scenario(server)
    sent: list[dict[str, Any]] = report["sent"]
    assert report["errors"] == []
    assert len(sent) == SCENARIO_CALLS + BURST
    assert report["messageIds"] == [message["messageId"] for message in sent]
    calls = assert_scenario_shape(sent, user_id="node-user-1", previous_id="node-anon-1")
    assert calls["page"]["category"] == "Docs"
    assert all(message["messageId"].startswith("node-next-") for message in sent)

    stored = wait_for_message_ids(server, report["messageIds"])

    assert_all_match(sent, stored, channel="server")
    library = {"name": "@segment/analytics-node", "version": version}
    assert all(event["context"]["library"] == library for event in stored)
    assert all(event["_metadata"]["jsRuntime"] == "node" for event in stored)
    assert all("anonymousId" not in event for event in stored), "the SDK sends no anonymousId with a userId"
