"""Cases: attention (being written)."""
