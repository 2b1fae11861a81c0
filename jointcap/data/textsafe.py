"""Text from files we did not write (caption files, generated captions, file names), made safe to show.

`clean_text` is the one sanitiser: every caption read from a file goes through it, and so does
every caption or name that reaches report.html, a figure or the terminal. It removes a byte-order
mark and ANSI/terminal escape sequences, turns every other control character and every line or
paragraph separator (VT, FF, NEL, U+2028, U+2029, …) into a space, drops bidirectional overrides
(which can make text read differently from what it holds), and collapses runs of whitespace, so
one caption stays one line of printable text. `split_lines` splits a caption file into lines on
\\n, \\r\\n and \\r only (Python's `str.splitlines` also splits on VT, FF, NEL, U+2028 …, which cuts
one caption in two). `path_text` writes a file name that may not be UTF-8 (undecodable bytes
escaped as `\\xNN`) so a CSV or a terminal line can always hold it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# ESC [ … final byte (CSI, e.g. colours and cursor moves), ESC ] … BEL/ST (OSC, e.g. window titles, hyperlinks),
# the 8-bit CSI (0x9b), and any other two-byte ESC sequence
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
# C0/C1 controls (incl. TAB, VT, FF, NEL), line/paragraph separators: each becomes a space
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# byte-order marks / zero-width no-break spaces, and bidirectional embeddings, overrides and isolates: dropped
_INVISIBLE = re.compile(r"[\ufeff\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"\s+")
_LINE_ENDS = re.compile(r"\r\n|\r|\n")


def clean_text(text: str) -> str:
    """One line of printable text: escapes and invisible marks dropped, controls and separators → one space."""
    text = _INVISIBLE.sub("", _ESCAPES.sub("", str(text)))
    return _SPACES.sub(" ", _BREAKS.sub(" ", text)).strip()


def split_lines(text: str) -> list[str]:
    """The non-empty lines of a text file, each cleaned; only \\n, \\r\\n and \\r end a line."""
    return [line for line in (clean_text(raw) for raw in _LINE_ENDS.split(text)) if line]


def path_text(path: Path | str) -> str:
    """A file name as valid, printable text: undecodable bytes as \\xNN, control characters as escapes."""
    raw = os.fsencode(path).decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in raw)
