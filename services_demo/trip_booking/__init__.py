"""services_demo.trip_booking."""
