"""Cases: losses (being written)."""
