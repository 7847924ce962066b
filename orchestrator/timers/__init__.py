"""orchestrator.timers."""
