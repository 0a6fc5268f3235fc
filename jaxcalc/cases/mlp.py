"""Cases: mlp (being written)."""
