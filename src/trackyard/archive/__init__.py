"""The complete copy of every event (compressed files per source and hour) and replay of
any range of it into any destination."""
