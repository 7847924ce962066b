"""orchestrator.matching."""
