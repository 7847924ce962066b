"""orchestrator.api."""
