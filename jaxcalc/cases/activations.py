"""Cases: activations (being written)."""
