"""The one base class of every error a user can fix (bad params, data, environment).

``run_stage`` and the ``xray-hpo`` command print these as one line and exit 2; anything
else is a bug and keeps its traceback. Each concern defines its own subclass next to the
code that raises it, so this module imports nothing of the project.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, stated in one line that names the file or key."""


class SettingError(UserError):
    """An environment variable holds a value this project cannot use."""
