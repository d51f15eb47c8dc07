"""TorchServe's and Multi Model Server's own ways of starting a server: their command line
(``serve --start``/``--stop``, serve/dialect/cli.py), their ``config.properties``
(serve/dialect/properties.py); its per-model ``models`` JSON is read with the other per-model
settings (serve/model/settings.py)."""
