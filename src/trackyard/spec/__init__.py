"""The Segment message model: call types, validation and server-side normalisation. Pure, no I/O."""

from trackyard.spec.normalize import CALL_TYPES, Envelope, InvalidEvent, normalise
from trackyard.spec.timestamps import format_ms, now_ms, parse_ms

__all__ = ["CALL_TYPES", "Envelope", "InvalidEvent", "format_ms", "normalise", "now_ms", "parse_ms"]
