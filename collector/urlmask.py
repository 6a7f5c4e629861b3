"""The URL-password mask, the one piece of redaction that settings need for their error messages.

Apart from `redact.py` because that module reads the settings (to learn the secrets to mask): settings
sit below it and import only this.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "USERINFO", "mask_url"]

MASK = "***"
#: `scheme://user:` (group 1) then the password up to `@`, anywhere in a text.
USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@\"'?#]*:)[^/\s@\"'?#]*@")


def mask_url(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host`, anywhere in `text`."""
    return USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
