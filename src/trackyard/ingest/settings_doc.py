"""The settings document analytics.js (analytics-next) and the mobile SDKs fetch at start-up.

`integrations["Segment.io"]` must be present and carry `apiHost`: analytics-next ignores a
load-time apiHost override when the key is missing, and analytics-kotlin resets apiHost to
api.segment.io when it is absent (segment-contract.md §3.1, §3.2). Metrics point back here,
so SDK telemetry never leaks to Segment; on plain http they are switched off (see below).
"""

from __future__ import annotations

from typing import Any


def settings_document(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """`api_host` is `host[:port][/prefix]/v1`, without a scheme, as the SDKs expect it."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
                "retryQueue": True,
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "middlewareSettings": {},
        "enabledMiddleware": {},
        # analytics-next sends metrics over https unless the page's own load options say
        # otherwise, so on a plain-http server they would fail in every browser console.
        "metrics": {"sampleRate": 0.1 if protocol == "https" else 0, "host": api_host, "flushTimer": 30000},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
        "edgeFunction": {},
    }
