"""Cases: optim_step (being written)."""
