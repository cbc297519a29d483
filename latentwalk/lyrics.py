"""Lyrics → keyframes: LRC parsing, snapping lines to the beat grid, and prompt templates.

LRC (https://en.wikipedia.org/wiki/LRC_(file_format)): each line is one or more time tags
`[mm:ss]`, `[mm:ss.xx]` or `[mm:ss.xxx]` followed by the sung text; `[ar:...]`, `[ti:...]` and
other `[key:value]` tags are metadata; `[offset:+250]` shifts every time by -250 ms (a positive
offset shows lyrics sooner); `<mm:ss.xx>` word tags (enhanced LRC) are dropped from the text.
"""

import re
from dataclasses import dataclass

from latentwalk.errors import UserError

SNAP_MODES = ("none", "beat", "bar")
_TIME_TAG = re.compile(r"\[\s*(\d+)\s*:\s*(\d{1,2}(?:[.:]\d+)?)\s*\]")
_META_TAG = re.compile(r"\[\s*([A-Za-z#][\w ]*?)\s*:(.*)\]\s*$")
_WORD_TAG = re.compile(r"<\d+:\d{1,2}(?:[.:]\d+)?>")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
_OFFSET = re.compile(r"[+-]?\d+")

@dataclass(frozen=True)
class LyricLine:
    time: float  # seconds into the audio file, [offset:] applied
    text: str  # the sung text, word tags removed and whitespace stripped ("" for a gap marker)
    line: int  # 1-based line in the LRC file

def parse_lrc(text: str, source: str = "<lyrics>") -> tuple[LyricLine, ...]:
    """Every timed line of an LRC file, sorted by time; bad lines fail as `file:line: lyrics: reason`."""
    entries: list[LyricLine] = []
    offset = 0.0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")
        fail = lambda reason: UserError(f"{source}:{number}: lyrics: {reason}")  # noqa: E731, B023
        if not line:
            continue
        times, rest = [], line
        while m := _TIME_TAG.match(rest):
            minutes, seconds = int(m.group(1)), float(m.group(2).replace(":", "."))
            if seconds >= 60:
                raise fail(f"seconds must be below 60 in time tag {m.group(0)!r}")
            times.append(60.0 * minutes + seconds)
            rest = rest[m.end() :].lstrip()
        if not times:
            meta = _META_TAG.match(line)
            if meta is None:
                raise fail(f"expected a time tag like [01:23.45] at the start of {raw.strip()!r}")
            if meta.group(1).strip().lower() == "offset":
                value = meta.group(2).strip()
                if not _OFFSET.fullmatch(value):
                    raise fail(f"[offset:] takes whole milliseconds such as +250 or -120, got {value!r}")
                offset = int(value) / 1000.0
            continue
        if rest.startswith("[") and _META_TAG.match(rest) is None:
            raise fail(f"malformed time tag in {rest!r} (expected [mm:ss.xx])")
        words = " ".join(_WORD_TAG.sub("", rest).split())
        entries.extend(LyricLine(time, words, number) for time in times)
    # The offset tag may come after the lines it applies to: apply it once all are read.
    shifted = [LyricLine(max(0.0, e.time - offset), e.text, e.line) for e in entries]
    return tuple(sorted(shifted, key=lambda e: e.time))

def escape_text(text: str) -> str:
    """Lyric text made literal inside a prompt: backslashes, quotes and braces escaped."""
    return "".join("\\" + c if c in '\\"{}' else c for c in text)

def template_names(template: str) -> tuple[str, ...]:
    """The `{name}` placeholders of a template (token edits such as {a|b:0.3} are not names)."""
    return tuple(_PLACEHOLDER.findall(template))

def fill_template(template: str, values: dict[str, str]) -> str:
    """The template with each `{name}` replaced by its value escaped; the result stays a plain prompt."""
    from latentwalk.prompts import is_expression

    filled = _PLACEHOLDER.sub(lambda m: escape_text(values[m.group(1)]), template)
    # A line such as "(I can't) ..." or "99 problems" at the start would read as an expression.
    if is_expression(filled) and not is_expression(template):
        filled = '"' + filled + '"'
    return filled
