"""sagas.activity."""
