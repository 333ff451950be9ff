"""Strings that come from files (class names, paths, manifest text, error messages) as they reach a terminal.

A model file can hold any string: an ANSI escape sequence would drive the user's terminal, a
newline would forge output lines, and ``[red]`` or ``[/]`` would be read as rich markup (and can
raise). ``plain`` escapes every control character (C0, DEL, C1, and the Unicode bidirectional
overrides) as ``\\xNN`` / ``\\uNNNN``; ``markup`` does that and escapes rich markup too, for strings
placed in rich tables and console lines. Rich markup is never built from data.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(value: object) -> str:
    """``str(value)`` with every control character written as an escape: one line, inert in any terminal."""
    return _CONTROL.sub(_escape, str(value))


def markup(value: object) -> str:
    """``plain(value)`` made literal for rich (``[`` of a tag escaped), for tables and console.print."""
    from rich.markup import escape

    return escape(plain(value))
