"""Serving models inside one worker: the inference thread and its queue, batching, devices, the
registry of loaded models and how workers agree on it."""
