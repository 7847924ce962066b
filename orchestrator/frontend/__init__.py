"""orchestrator.frontend."""
