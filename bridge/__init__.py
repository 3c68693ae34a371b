"""dash-stream event bridge."""
