"""Keeping patient data out of messages.

Error messages from BigQuery, pydicom and Python itself quote the offending value ("Invalid value
'DOE^JOHN' for PN"); those values can be names, IDs or dates of patients. Everything we log, put
in XCom or raise passes through here first, so only structure (tags, paths, counts) survives.
"""

from __future__ import annotations

import re

_QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')


def redact_quoted(message: object) -> str:
    """The message with every quoted value replaced by an ellipsis."""
    return _QUOTED.sub('"…"', str(message or ""))
