"""sagas.testing."""
