"""Per-frame extraction: extractors, their backends, the registry and the orchestrator."""
