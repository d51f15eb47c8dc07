"""What the server reports about itself: runtime events, and the Prometheus metrics made of
them."""
