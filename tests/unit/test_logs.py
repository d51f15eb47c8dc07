"""Log lines name the model the thread works for, in text and in JSON."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from serve.observe.logs import configure_logging, log_model


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log_model("")  # an earlier test's request may have left this thread working for a model
    yield
    root.handlers[:], root.level = handlers, level
    log_model("")


def _log_from_a_model_thread(message: str) -> None:
    def work() -> None:
        log_model("digits")
        logging.getLogger("user.handler").warning(message)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_text_lines_carry_the_model_of_their_thread(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(logging.INFO, "text")
    _log_from_a_model_thread("slow batch")
    logging.getLogger("serve.process.server").info("no model here")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("WARNING user.handler [digits]: slow batch")
    assert lines[1].endswith("INFO serve.process.server: no model here")


def test_json_lines_carry_a_model_field(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(logging.INFO, "json")
    _log_from_a_model_thread("slow batch")
    logging.getLogger("serve").info("no model here")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert (first["model"], first["message"]) == ("digits", "slow batch")
    assert "model" not in second
