"""sagas.worker."""
