"""orchestrator.visibility."""
