"""Process-level runtime: cluster layout, memory, shutdown, metrics, summary, live view."""
