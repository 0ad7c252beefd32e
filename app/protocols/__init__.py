"""Wire protocols: request and response bytes ⇄ columnar batches (pure)."""
