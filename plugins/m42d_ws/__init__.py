"""WebSocket transport (stub)."""
