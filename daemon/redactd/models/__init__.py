"""Model manifest, verification and fetching (no inference here)."""
