"""orchestrator.history."""
