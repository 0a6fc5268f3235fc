"""Cases: softmax (being written)."""
