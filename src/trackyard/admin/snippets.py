"""Install snippets for a source: Segment's own SDKs, pointed at this server, ready to paste."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snippet:
    id: str
    label: str
    install: str  # the command that installs the SDK, shown above the code
    code: str


def _js_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def snippets(base_url: str, write_key: str) -> list[Snippet]:
    """`base_url` is where SDKs reach this server (scheme, host and port, no trailing slash)."""
    key, url = _js_string(write_key), _js_string(base_url)
    return [
        Snippet(
            "browser",
            "Browser",
            "npm install @segment/analytics-next",
            "import { AnalyticsBrowser } from '@segment/analytics-next'\n\n"
            "// cdnURL: the SDK fetches its settings from trackyard, which point it at trackyard\n"
            f"export const analytics = AnalyticsBrowser.load({{ writeKey: {key}, cdnURL: {url} }})\n\n"
            "analytics.page()\n"
            "analytics.track('Signed Up', { plan: 'premium' })\n",
        ),
        Snippet(
            "python",
            "Python",
            "pip install segment-analytics-python",
            "from segment.analytics import Client\n\n"
            f"analytics = Client(write_key={write_key!r}, host={base_url!r})\n"
            'analytics.identify("user-1", {"email": "peter@example.com", "plan": "premium"})\n'
            'analytics.track("user-1", "Signed Up", {"plan": "premium"})\n'
            "analytics.flush()\n",
        ),
        Snippet(
            "node",
            "Node.js",
            "npm install @segment/analytics-node  # save the code as track.mjs, run: node track.mjs",
            "import { Analytics } from '@segment/analytics-node'\n\n"
            f"const analytics = new Analytics({{ writeKey: {key}, host: {url} }})\n"
            "analytics.identify({ userId: 'user-1', traits: { email: 'peter@example.com', plan: 'premium' } })\n"
            "analytics.track({ userId: 'user-1', event: 'Signed Up', properties: { plan: 'premium' } })\n"
            "await analytics.closeAndFlush()\n",
        ),
        Snippet(
            "curl",
            "curl",
            "# the write key is the Basic auth user name, with an empty password",
            f"curl -u '{write_key}:' {base_url}/v1/track \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            '  -d \'{"userId": "user-1", "event": "Signed Up", "properties": {"plan": "premium"}}\'\n',
        ),
    ]
