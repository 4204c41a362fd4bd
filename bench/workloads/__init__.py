"""The benchmark\x27s measurements, one module each; bench/run.py runs them in turn."""
