"""gdlab."""
