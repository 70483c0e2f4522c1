"""trackyard: a self-hosted, Segment-compatible customer data platform."""

__version__ = "0.1.0"
