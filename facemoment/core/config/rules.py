"""How a setting declares what it accepts: its range, its choices or its grammar.

Each field of the sections (sections.py) carries one :class:`Rule` in its dataclass
metadata, declared next to its default with :func:`setting`. Validation
(validation.py) reads nothing else, so a setting's default and its limits sit on one
line. The field's type annotation says int, float, bool, str, an Optional of one or
a List of one; the rule narrows it.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Optional, Tuple

from facemoment.core.config.errors import ConfigError

# Strings are one line of printable text; paths and addresses stay below PATH_MAX.
DEFAULT_MAX_LEN = 4096
# Lists (extractors, extra streams, rates...): far more than any real configuration holds.
MAX_ITEMS = 1024


@dataclass(frozen=True)
class Rule:
    """What one setting accepts beyond its type.

    Numbers: ``low``/``high`` bounds (``low_open``: the bound itself is refused);
    NaN and infinities are refused unless ``finite`` is False. Strings (and each
    item of a list of strings): at most ``max_len`` characters, no control
    character, one of ``choices`` or a full match of ``pattern`` (described to the
    user as ``grammar``).
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    finite: bool = True
    choices: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    grammar: str = ""
    max_len: int = DEFAULT_MAX_LEN

    def bounds(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}]"

    def check_number(self, where: str, value: float) -> None:
        if value != value or (self.finite and value in (float("inf"), float("-inf"))):
            raise ConfigError(f"{where} = {value!r} is out of range {self.bounds()} (a finite number is needed)")
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        if not low_ok or (self.high is not None and value > self.high):
            raise ConfigError(f"{where} = {value!r} is out of range {self.bounds()}")

    def check_text(self, where: str, value: str) -> None:
        if len(value) > self.max_len:
            raise ConfigError(f"{where} is {len(value)} characters long; at most {self.max_len} are allowed")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(f"{where} = {value[:80]!r} holds a control character (one line of text is needed)")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} = {value!r} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{where} = {value[:80]!r} must be {self.grammar or 'of the form ' + self.pattern}")


def setting(default: Any = MISSING, *, factory: Optional[Callable[[], Any]] = None, **rule: Any) -> Any:
    """A dataclass field with its default and its :class:`Rule` (see the module doc)."""
    metadata = {"rule": Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def rule_of(dc_field: Any) -> Rule:
    return dc_field.metadata.get("rule", Rule())


# A word of the TRIG/OBS text format (docs/configuration.md, "Strings"): printable
# ASCII without spaces or '='. The 128-character bound keeps a TRIG line far inside one
# 64 KiB datagram and the clip name visualbase builds from the label
# ({YYYYmmdd_HHMMSS}_{label}_{score}_t{sec}.mp4) inside a 255-byte file name.
WIRE_WORD = r"[!-<>-~]+"
WIRE_WORD_GRAMMAR = "one word of printable ASCII without spaces or '='"
WIRE_WORD_MAX = 128
# Stream ids name Bytewax steps ("frames_<id>") and share partitions ("<id>/0of2"):
# Bytewax refuses '.' in step ids and '/' separates a share.
STREAM_ID = r"[A-Za-z0-9_-]+"
STREAM_ID_GRAMMAR = "a stream id of letters, digits, '_' and '-' only"
STREAM_ID_MAX = 64
