"""Administration: the service layer behind the CLI, the JSON API and the web UI."""
