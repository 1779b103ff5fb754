"""TCP+TLS transport (stub)."""
