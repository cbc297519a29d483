"""Contact sheets: a labelled grid of images (axis titles and values, or a caption per cell).

Pure layout over PIL drawing; a sweep (sweep.Sweep, duck-typed: grid_shape, mode, x, y, prompt,
settings) says what the labels are. Cells are enlarged by a whole factor with nearest-neighbour
so each pixel of a cell stays a pixel.
"""

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
# Geometry in pixels. Cells narrower than MIN_SHEET_CELL are enlarged by a whole factor
# (nearest neighbour, so pixels stay exact) so that a value label fits under a column.
FONT_SIZE = 12
LINE = FONT_SIZE + 4  # height of one line of text
PAD = 4  # outer margin and text inset
GAP = 2  # between cells
MIN_SHEET_CELL = 96
MAX_LABEL_LINES = 3  # column labels (long prompts) wrap to at most this many lines
MAX_ROW_LABEL_WIDTH = 160
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes on the contact sheet; cells are enlarged `scale` times."""

    rows: int
    cols: int
    cell_width: int  # on the sheet: the image width times scale
    cell_height: int
    scale: int
    left: int  # row-label column, 0 without a y axis
    top: int  # title, x-axis title and column labels
    caption: int  # text under each cell (seeds mode), 0 otherwise

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet."""
        width = PAD + self.left + self.cols * self.cell_width + (self.cols - 1) * GAP + PAD
        height = self.top + self.rows * (self.cell_height + self.caption) + (self.rows - 1) * GAP + PAD
        return width, height

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of a cell's top-left pixel."""
        return PAD + self.left + col * (self.cell_width + GAP), self.top + row * (self.cell_height + self.caption + GAP)


def sheet_font(size: int = FONT_SIZE):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def wrap_text(text: str, font, width: float, max_lines: int) -> list[str]:
    """Greedy word wrap to a pixel width; overflow is cut and marked with '...'."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    lines = lines or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " ..."
    return [fit_text(line, font, width) for line in lines]


def fit_text(line: str, font, width: float) -> str:
    if font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "...") > width:
        line = line[:-1]
    return line + "..."


def sheet_layout(sweep, font) -> tuple[SheetLayout, list[list[str]], list[list[str]]]:
    """The layout, the wrapped column labels and the wrapped row labels."""
    rows, cols = sweep.grid_shape
    w, h = sweep.settings.width, sweep.settings.height
    scale = max(1, math.ceil(MIN_SHEET_CELL / min(w, h)))
    cw, ch = w * scale, h * scale
    if sweep.mode == "seeds":
        return SheetLayout(rows, cols, cw, ch, scale, left=0, top=LINE + PAD, caption=LINE), [], []
    col_labels = [wrap_text(label, font, cw - 2, MAX_LABEL_LINES) for label in sweep.x.labels]
    row_labels: list[list[str]] = []
    left = 0
    if sweep.y is not None:
        row_labels = [wrap_text(label, font, MAX_ROW_LABEL_WIDTH, max(1, ch // LINE)) for label in sweep.y.labels]
        texts = [line for lines in row_labels for line in lines] + [f"y: {sweep.y.param}"]
        left = min(MAX_ROW_LABEL_WIDTH, math.ceil(max(font.getlength(t) for t in texts))) + 2 * PAD
    top = PAD + LINE * (2 + max(len(lines) for lines in col_labels))  # title, x title, labels
    return SheetLayout(rows, cols, cw, ch, scale, left, top, caption=0), col_labels, row_labels


def contact_sheet(sweep, cells: Sequence, images: np.ndarray) -> tuple[np.ndarray, SheetLayout]:
    """A labelled grid of the cells: axis titles and values (grid), or seed numbers (seeds mode)."""
    from PIL import Image, ImageDraw

    font = sheet_font()
    layout, col_labels, row_labels = sheet_layout(sweep, font)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    # 1. The prompt (or what varies it) on top, so a sheet makes sense on its own.
    subject = sweep.prompt if sweep.prompt is not None else f"prompt: see the {'x' if sweep.x.param == 'prompt' else 'y'} axis"
    if sweep.mode == "seeds":
        subject = f"seeds {sweep.x.values[0]}-{sweep.x.values[-1]}: {subject}"
    draw.text((PAD, PAD), fit_text(subject, font, layout.size[0] - 2 * PAD), font=font, fill=INK)
    # 2. The cells, enlarged with nearest-neighbour so each pixel stays a pixel.
    for cell in cells:
        x0, y0 = layout.cell_origin(cell.row, cell.col)
        pixels = images[cell.row, cell.col].repeat(layout.scale, axis=0).repeat(layout.scale, axis=1)
        sheet.paste(Image.fromarray(pixels), (x0, y0))
        if layout.caption:
            text = fit_text(f"seed {cell.label}", font, layout.cell_width)
            draw.text((x0 + (layout.cell_width - font.getlength(text)) / 2, y0 + layout.cell_height + 2), text, font=font, fill=INK)
    if sweep.mode == "seeds":
        return np.asarray(sheet), layout
    # 3. Axis titles and values: x above the columns, y left of the rows.
    x_left, _ = layout.cell_origin(0, 0)
    draw.text((x_left, PAD + LINE), f"x: {sweep.x.param}", font=font, fill=INK)
    for col, lines in enumerate(col_labels):
        x0, _ = layout.cell_origin(0, col)
        for k, line in enumerate(lines):
            draw.text((x0 + (layout.cell_width - font.getlength(line)) / 2, PAD + LINE * (2 + k)), line, font=font, fill=INK)
    if sweep.y is not None:
        draw.text((PAD, layout.top - LINE), f"y: {sweep.y.param}", font=font, fill=INK)
        for row, lines in enumerate(row_labels):
            _, y0 = layout.cell_origin(row, 0)
            middle = y0 + (layout.cell_height - LINE * len(lines)) / 2
            for k, line in enumerate(lines):
                draw.text((PAD, middle + LINE * k), line, font=font, fill=INK)
    return np.asarray(sheet), layout
