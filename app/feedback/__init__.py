"""Ground truth: predictions kept for matching with late labels, and the stores that keep them."""
