"""Stand-in for TorchServe's ts_scripts/marsgen.py (not copied: it downloads weights from
download.pytorch.org). The same archive names, built here from local files (NOTICE.md)."""

from tests.peers.standins import delete_model_store_gen_dir, gen_mar  # noqa: F401
