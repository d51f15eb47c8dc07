"""HTTP: the Flask app factory, its hooks and error handler, and the routes of each API."""
