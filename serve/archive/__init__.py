"""`python -m serve archive`: the model archiver (torch-model-archiver's flags), its layout and
its writers."""
