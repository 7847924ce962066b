"""sagas.converter."""
