"""services_demo."""
