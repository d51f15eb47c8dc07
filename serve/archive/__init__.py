"""`python -m serve archive`: the model archiver (torch-model-archiver's flags, or MMS
model-archiver's), its command line, layout and writers."""
