"""``make bench``: speed and memory of diplotone, every figure from one run (see bench/README.md)."""
