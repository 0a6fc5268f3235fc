"""Cases: transformer (being written)."""
