"""Processes: gunicorn embedded from Python, the worker class, logging, the CPU count."""
