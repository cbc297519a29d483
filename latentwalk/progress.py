"""One progress display for a whole render: its stages, each stage's count, and an overall ETA.

A render makes one `Progress` (api.render; `progress=False`, the CLI's `--quiet`, makes it
silent) and moves it through its stages: the audio analysis (or the plan, for a silent
timeline), the placement probes, the frames, and the encode. A stage may count work: the
probes one placement round at a time (each round adds its probes to the stage's total when
placement has planned it), the frames by the number of distinct frames this run denoises.

The ETA is over the frames still to denoise in this run, probes and video frames together:
remaining = (work planned so far) - (work done), where the work planned grows as each
placement round and then the frame stage announce their totals (before the frame stage starts
it covers only the probes planned so far). The rate is done/elapsed measured from the first
batch that arrived in this run: (frames done - frames of that first batch) / (seconds since
it), so the model load and the first batch's warm-up are not counted as denoising time. Until
a second batch arrives there is no rate and the ETA reads "?". ETA = remaining / rate.

On a terminal (stderr a tty) the display redraws one line with a carriage return. Otherwise
it prints plain lines, never a carriage return: one when a stage starts, one when it ends,
and in between at most one progress line every `interval` seconds (5) or each further 10 % of
the stage's count. Plain lines are held until the first batch arrives (or the render ends):
a render that stops on an input error prints that error alone, as it always has.
"""

import sys
import time
from typing import Callable, TextIO


def duration(seconds: float | None) -> str:
    """`12s`, `3m05s`, `1h02m`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The display: `stage(name)` starts a stage (ending the one before), `add_total(n)` plans
    work in it, `advance(n)` counts work done, `finish()` ends the last stage."""

    def __init__(
        self, enabled: bool = True, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None, interval: float = 5.0,
    ) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.name: str | None = None  # the current stage
        self.unit = "frame"
        self.count = 0  # the current stage's work done and planned
        self.total: int | None = None
        self.stage_start = 0.0
        self.done = 0  # work done and planned over the whole render (every counting stage)
        self.planned = 0
        self.first_batch: tuple[float, int] | None = None  # (time, work done) at the first batch of this run
        self.last_line = 0.0  # plain lines: when the last progress line was printed, and at which tenth of the stage
        self.last_tenth = 0
        self.width = 0  # terminal: the length of the line drawn
        self.held: list[str] | None = None if self.tty else []  # plain lines kept until the first batch arrives

    # -- events ---------------------------------------------------------------------------

    def stage(self, name: str, total: int | None = None, unit: str = "frame") -> None:
        """Start stage `name` (a stage already running under that name just plans `total` more)."""
        if name == self.name:
            if total:
                self.add_total(total)
            return
        self.end_stage()
        self.name, self.unit, self.count, self.total = name, unit, 0, None
        self.stage_start = self.last_line = self.clock()
        self.last_tenth = 0
        if total is not None:
            self.add_total(total)
        self.show(f"{name}: started" + (f", {self.total} {unit}s to make" if self.total is not None else ""), event=True)

    def add_total(self, n: int) -> None:
        """Plan `n` more units of work in the current stage (a placement round, frames rendered again)."""
        self.total = (self.total or 0) + n
        self.planned += n
        self.last_tenth = self.count * 10 // self.total if self.total else 0  # the 10 % steps of the grown total

    def advance(self, n: int = 1) -> None:
        """`n` units of work of the current stage done (a batch arrived)."""
        if n <= 0:
            return
        now = self.clock()
        self.count += n
        self.done += n
        if self.first_batch is None:
            self.first_batch = (now, self.done)
        self.release()
        tenth = self.count * 10 // self.total if self.total else 0
        if self.tty or now - self.last_line >= self.interval or tenth > self.last_tenth:
            self.last_line, self.last_tenth = now, tenth
            self.show(self.status(now))

    def end_stage(self) -> None:
        if self.name is None:
            return
        elapsed = self.clock() - self.stage_start
        counted = f", {self.count}/{self.total} {self.unit}s" if self.total is not None else ""
        self.show(f"{self.name}: done in {duration(elapsed)}{counted}", event=True)
        self.name = None

    def finish(self, failed: bool = False) -> None:
        """End the last stage; on a terminal, leave the line drawn.

        `failed`: the render stopped with an error, which is all it should print: the stage
        lines held since the start (no batch arrived yet) are dropped, and a terminal's line erased.
        """
        if failed:
            self.name, self.held = None, None if self.held is None else []
            if self.enabled and self.tty and self.width:
                self.stream.write("\r" + " " * self.width + "\r")
                self.stream.flush()
                self.width = 0
            return
        self.end_stage()
        self.release()
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0

    def release(self) -> None:
        """Print the plain lines held until now: the render is past checking its inputs."""
        if self.held:
            self.stream.write("".join(self.held))
            self.stream.flush()
        self.held = None

    def note(self, message: str) -> None:
        """A warning or notice, printed even when the display is silent, on a line of its own."""
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.width = 0
        print(message, file=self.stream, flush=True)

    # -- what is shown --------------------------------------------------------------------

    def rate(self, now: float) -> float | None:
        """Units per second since the first batch of this run, or None before a second batch."""
        if self.first_batch is None:
            return None
        t0, done0 = self.first_batch
        if self.done <= done0 or now <= t0:
            return None
        return (self.done - done0) / (now - t0)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left for the work planned so far, at the rate so far (None: no rate yet)."""
        now = self.clock() if now is None else now
        remaining = max(self.planned - self.done, 0)
        if remaining == 0:
            return 0.0
        rate = self.rate(now)
        return None if rate is None else remaining / rate

    def status(self, now: float) -> str:
        total = "?" if self.total is None else self.total
        percent = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        rate = self.rate(now)
        speed = f", {rate:.2f} frames/s" if rate is not None else ""
        return (f"{self.name}: {self.count}/{total} {self.unit}s{percent}; overall {self.done}/{self.planned} frames"
                f"{speed}, ETA {duration(self.eta(now))}")

    def show(self, line: str, event: bool = False) -> None:
        if not self.enabled:
            return
        if self.tty:  # one line, redrawn
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif self.held is not None:  # until a batch arrives: an input error is the render's only line
            self.held.append(f"[latentwalk] {line}\n")
            return
        else:
            self.stream.write(f"[latentwalk] {line}\n")
        self.stream.flush()


def silent() -> Progress:
    return Progress(enabled=False)
