"""sagas.workflow."""
