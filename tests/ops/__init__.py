"""Op tests: every available backend against the PyTorch reference (a package, so test module names stay unique)."""
