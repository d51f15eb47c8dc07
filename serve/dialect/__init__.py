"""TorchServe's and Multi Model Server's own ways of starting a server: their command line
(``serve --start``/``--stop``, serve/dialect/cli.py), their ``config.properties``
(serve/dialect/properties.py) and its per-model ``models`` JSON (serve/dialect/modelconfig.py)."""
