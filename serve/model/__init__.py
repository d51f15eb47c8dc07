"""Model directories: finding and unpacking archives safely, manifests, requirements, and the
model store."""
