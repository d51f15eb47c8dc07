"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from typing import ClassVar


class DeployError(Exception):
    """Something the user can fix; the message says what and how.

    ``exit_code`` lives on the class so the CLI has a single error handler.
    """

    exit_code: ClassVar[int] = 1


class SettingMissingError(DeployError):
    """A region, role, bucket or image is needed and was not given anywhere."""

    exit_code = 2


class EndpointFailedError(DeployError):
    """SageMaker reported ``Failed`` (or rolled an update back)."""

    exit_code = 3
