"""byoserve's stand-in for TorchServe's ``ts`` package (see handlers/tsfallback/__init__.py)."""
