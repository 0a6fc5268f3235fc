"""Cases: layers (being written)."""
