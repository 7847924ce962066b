"""sagas.cli."""
