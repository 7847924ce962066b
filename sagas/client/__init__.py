"""sagas.client."""
