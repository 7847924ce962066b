"""services_demo.order_payment."""
