"""orchestrator.persistence."""
