"""PDF output for the report consumer: one PDF per search page, merged at the end.

Libraries. fpdf2 (LGPL-3.0, pure Python; needs Pillow, fontTools and defusedxml, all wheels,
no system library) writes the parts: it is small, maintained, typed, embeds subsets of TrueType
fonts and has header/footer hooks. ReportLab (BSD) would do as well but is a larger toolkit
(Platypus, graphics) than a table needs. pypdf (BSD-3-Clause, pure Python, no dependency)
merges the parts, so it is a runtime dependency too, not only the tests' reader.

Why merge PDFs rather than render every row again at the end: each part is rendered as its
search page arrives, like the CSV path, and the merge only copies finished pages. What a part
cannot know is the document's page count, so the merge rewrites one string per page: the
"Page n of N" footer, which is the only text set in Helvetica-Oblique (a core font the table
never uses), so it is found by its font without parsing the page.

Fonts. The PDF core fonts cover Latin-1 only. The text is set in DejaVu Sans when it is on the
machine (Debian's ``fonts-dejavu-core``; ``REPORTS_PDF_FONTS`` may name other TrueType files,
separated by ``os.pathsep``: the first is the main font, the others fallbacks, e.g. a CJK
font). Characters that no chosen font can draw become U+FFFD (or ``?`` with the core font),
so that "東京" without a CJK font shows as two replacement marks rather than failing.

Used by ``reports.make_report`` for the ``pdf`` format: ``render_page`` for each search page
(CPU-bound, about 0.65 ms a row: ``reports.write_part`` runs it on a thread), then
``merge(parts, final, title)`` in place of the text formats' concatenation.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from fpdf import FPDF
from fpdf.fonts import CORE_FONTS_CHARWIDTHS
from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, StreamObject

__all__ = ["DEFAULT_FONTS", "find_fonts", "merge", "render_page"]

FONT_SEARCH_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),  # Debian, Ubuntu
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),  # Alpine
    Path("/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf"),  # Fedora
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),  # Arch
)

# Layout, in millimetres on A4 portrait.
PAGE_H = 297.0
MARGIN = 12.0
TITLE_H = 8.0
HEADER_H = 6.0
ROW_H = 5.0
FOOTER_Y = -9.0  # from the bottom edge
TEXT_PT = 8.5
TITLE_PT = 11.0
FOOTER_PT = 7.5
CELL_PAD = 1.0
MAX_CELL_CHARS = 300  # longer values are cut before measuring: a cell shows one line anyway

# The page number is the only text in this core font: the merge finds it by the font.
NUMBER_FONT = ("helvetica", "I")
NUMBER_BASEFONT = "/Helvetica-Oblique"
_NUMBER_TEXT = re.compile(rb"BT (-?[\d.]+) (-?[\d.]+) Td ([^()]*)\((Page \d+ of \d+)\) Tj ET")
_PART_KEYWORDS = re.compile(r"\brows=(\d+)\b")
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_WHITESPACE = {"\t", "\n", "\r", "\v", "\f", "\x85", "\u2028", "\u2029"}


def find_fonts() -> tuple[Path, ...]:
    """The TrueType fonts to embed: ``REPORTS_PDF_FONTS`` if set (empty means the core font),
    else DejaVu Sans where the system has it, else none (core Helvetica, Latin-1 only)."""
    configured = os.environ.get("REPORTS_PDF_FONTS")
    if configured is not None:
        return tuple(Path(p) for p in configured.split(os.pathsep) if p)
    return next(((p,) for p in FONT_SEARCH_PATHS if p.is_file()), ())


DEFAULT_FONTS = find_fonts()


@lru_cache(maxsize=8)
def _charset(font: Path) -> frozenset[int]:
    """Code points the font has a glyph for; read once per process, the file is large."""
    with TTFont(font, lazy=True) as tt:
        return frozenset(tt.getBestCmap())


def _drawable(fonts: Sequence[Path]) -> frozenset[int]:
    if not fonts:
        return frozenset(range(0x20, 0x7F)) | frozenset(range(0xA0, 0x100))
    return frozenset().union(*(_charset(f) for f in fonts))


def _clean(text: str, drawable: frozenset[int], replacement: str) -> str:
    """One line of drawable text: whitespace controls become spaces; other controls and
    format characters (zero-width, bidi marks), invisible anyway, are dropped; anything else
    the fonts cannot draw (or that is no character: surrogates, unassigned) is ``replacement``."""
    out = []
    for ch in text[:MAX_CELL_CHARS]:
        category = unicodedata.category(ch)
        if ch in _WHITESPACE:
            out.append(" ")
        elif category in ("Cc", "Cf"):
            continue
        elif category in ("Cs", "Co", "Cn") or ord(ch) not in drawable:
            out.append(replacement)
        else:
            out.append(ch)
    return "".join(out)


def _info(text: str) -> str:
    """Text for the document information: any character but controls and surrogates."""
    whitespace = "".join(" " if ch in _WHITESPACE else ch for ch in text[:MAX_CELL_CHARS])
    return "".join(
        "\ufffd" if unicodedata.category(ch) == "Cs" else ch
        for ch in whitespace
        if unicodedata.category(ch) != "Cc"
    )


def _format(value: Any) -> tuple[str, bool]:
    """The cell text and whether it is a number (right-aligned): floats and decimals with two
    decimals, ints as they are; both in scientific notation when too long for a cell."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        if -(10**15) < value < 10**15:
            return str(value), True
        return f"{Decimal(value):.3e}", True  # str() of a huge int is refused past 4300 digits
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value), True
        return (f"{value:.3e}" if value.adjusted() >= 15 else f"{value:.2f}"), True
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value), True
        return (f"{value:.3e}" if abs(value) >= 1e15 else f"{value:.2f}"), True
    try:
        return str(value), False
    except Exception:
        return type(value).__name__, False


class _PartPDF(FPDF):
    """A part: title and column header on top of every page, page number in the footer."""

    def __init__(
        self, columns: Sequence[str], title: str, pages: int, fonts: Sequence[Path]
    ) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(False)
        self.c_margin = CELL_PAD
        self.set_creation_date(_EPOCH)  # the same rows give the same bytes
        self.str_alias_nb_pages = ""  # no "{nb}" substitution inside cell text
        if fonts:
            for i, font in enumerate(fonts):
                self.add_font(f"f{i}", "", str(font))
            self.set_fallback_fonts([f"f{i}" for i in range(1, len(fonts))])
            self.text_family = "f0"
        else:
            self.text_family = "helvetica"
        self.replacement = "\ufffd" if fonts and 0xFFFD in _charset(fonts[0]) else "?"
        self.ellipsis = "\u2026" if fonts and 0x2026 in _charset(fonts[0]) else "..."
        self.drawable = _drawable(fonts)
        self.columns = [self.clean(c) for c in columns]
        self.title_text = self.clean(title)
        self.col_w = self.epw / max(1, len(columns))
        self.numeric = [False] * len(self.columns)  # header alignment, set from the first row
        self.part_pages = pages

    def clean(self, text: str) -> str:
        return _clean(text, self.drawable, self.replacement)

    def fit(self, text: str, width: float) -> str:
        """``text`` cut to ``width`` with an ellipsis: a cell is one line, so that every page
        holds the same number of rows (the CSV keeps the full values)."""
        room = width - 2 * CELL_PAD
        if self.get_string_width(text) <= room:
            return text
        lo, hi = 0, len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.get_string_width(text[:mid] + self.ellipsis) <= room:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo] + self.ellipsis

    def header(self) -> None:
        self.set_font(self.text_family, size=TITLE_PT)
        self.set_text_color(0)
        self.cell(self.epw, TITLE_H, self.fit(self.title_text, self.epw), new_x="LMARGIN")
        self.ln(TITLE_H)
        self.set_font(self.text_family, size=TEXT_PT)
        self.set_fill_color(220)
        for name, numeric in zip(self.columns, self.numeric, strict=True):
            text = self.fit(name, self.col_w)
            self.cell(
                self.col_w, HEADER_H, text, border="B", fill=True, align="R" if numeric else "L"
            )
        self.ln(HEADER_H)

    def footer(self) -> None:
        self.set_y(FOOTER_Y)
        self.set_text_color(110)
        self.set_font(self.text_family, size=FOOTER_PT)
        self.cell(self.epw / 2, 4, self.fit(self.title_text, self.epw / 2))
        self.set_font(NUMBER_FONT[0], NUMBER_FONT[1], FOOTER_PT)
        self.cell(self.epw / 2, 4, f"Page {self.page_no()} of {self.part_pages}", align="R")


def _cells(row: Sequence[Any], width: int) -> list[Any]:
    """The row cut or padded (with empty cells) to the columns."""
    return list(row[:width]) + [None] * (width - len(row))


def rows_per_page() -> int:
    """Rows that fit under the header and above the bottom margin; fixed, as rows are one line."""
    return int((PAGE_H - 2 * MARGIN - TITLE_H - HEADER_H) // ROW_H)


def render_page(
    rows: Sequence[Sequence[Any]],
    columns: Sequence[str],
    page_number: int,
    title: str,
    *,
    fonts: Sequence[Path] = DEFAULT_FONTS,
) -> bytes:
    """One search page (``page_number``, from 0) as a PDF: a table over as many PDF pages as
    it needs, footers numbered within the part until ``merge`` numbers the whole document.
    Rows are cut or padded to the columns; no value makes it fail. The row count is kept in
    the keywords so that the merge can leave out empty parts."""
    per_page = rows_per_page()
    pages = max(1, -(-len(rows) // per_page))
    pdf = _PartPDF(columns, title, pages, fonts)
    pdf.set_title(_info(title))
    pdf.set_keywords(f"part={page_number} rows={len(rows)}")
    pdf.set_creator("consumers.report_pdf")
    width = len(pdf.columns)
    if rows:
        pdf.numeric = [_format(v)[1] for v in _cells(rows[0], width)]
    pdf.add_page()
    pdf.set_text_color(0)
    pdf.set_font(pdf.text_family, size=TEXT_PT)
    pdf.set_fill_color(244)
    if not rows:
        pdf.cell(pdf.epw, ROW_H, "No rows.")
    for i, row in enumerate(rows):
        if i and i % per_page == 0:
            pdf.add_page()
            pdf.set_text_color(0)
            pdf.set_font(pdf.text_family, size=TEXT_PT)
            pdf.set_fill_color(244)
        for value in _cells(row, width):
            text, numeric = _format(value)
            text = pdf.fit(pdf.clean(text), pdf.col_w)
            pdf.cell(pdf.col_w, ROW_H, text, align="R" if numeric else "L", fill=i % 2 == 1)
        pdf.ln(ROW_H)
    return bytes(pdf.output())


def _number_width(text: str) -> float:
    """Width in points of ``text`` in the footer's core font."""
    widths = CORE_FONTS_CHARWIDTHS["".join(NUMBER_FONT)]
    return sum(widths[c] for c in text) * FOOTER_PT / 1000


def _renumber(content: bytes, font: str, number: int, total: int) -> bytes:
    """``content`` with its "Page i of k" footer made "Page number of total", still
    right-aligned. Exactly one footer per page, or the part was not made by ``render_page``."""
    select = f"/{font} {FOOTER_PT:.2f} Tf".encode()
    start = content.rfind(select)
    found = _NUMBER_TEXT.search(content, start) if start >= 0 else None
    if found is None:
        raise ValueError("page has no 'Page n of N' footer: not a part from render_page")
    old, new = found.group(4).decode(), f"Page {number} of {total}"
    x = float(found.group(1)) + _number_width(old) - _number_width(new)
    y, state = found.group(2).decode(), found.group(3).decode()
    text = f"BT {x:.2f} {y} Td {state}({new}) Tj ET".encode()
    return content[: found.start()] + text + content[found.end() :]


def _number_font(page: PageObject) -> str:
    """The page's resource name of the footer's page-number font."""
    resources = page["/Resources"].get_object()
    fonts = resources.get("/Font") if isinstance(resources, DictionaryObject) else None
    fonts = fonts.get_object() if fonts is not None else None
    for name, font in fonts.items() if isinstance(fonts, DictionaryObject) else ():
        if font.get_object()["/BaseFont"] == NUMBER_BASEFONT:
            return str(name)[1:]
    raise ValueError("page has no page-number font: not a part from render_page")


def _part_info(part: Path) -> tuple[int, int]:
    """(rows, pages) of a part, read without keeping it."""
    reader = PdfReader(part)
    keywords = reader.metadata.keywords if reader.metadata else None
    rows = _PART_KEYWORDS.search(keywords or "")
    return (int(rows.group(1)) if rows else 1), len(reader.pages)


def merge(parts: list[Path], final: Path, title: str) -> int:
    """Append the parts' pages in order into ``final``, number them "Page n of N" across the
    document, and remove the parts with their folder, as ``reports.merge`` does; returns N.

    Empty parts (a search page the filter emptied) are left out unless every part is empty,
    so an empty report is one page with the header. One part is open at a time; the writer
    holds the finished, compressed pages until it writes them.
    """
    if not parts:
        raise ValueError("merge needs at least one part")
    info = [(part, *_part_info(part)) for part in parts]
    keep = [(part, pages) for part, rows, pages in info if rows] or [(parts[0], info[0][2])]
    total = sum(pages for _, pages in keep)
    writer = PdfWriter()
    number = 0
    for part, _ in keep:
        for page in PdfReader(part).pages:
            number += 1
            copy = writer.add_page(page)
            stream = copy["/Contents"].get_object()
            if not isinstance(stream, StreamObject):  # fpdf2 writes one stream per page
                raise ValueError(f"{part}: a page with several content streams")
            content = _renumber(stream.get_data(), _number_font(copy), number, total)
            stream.set_data(content)
    writer.add_metadata({"/Title": _info(title), "/Creator": "consumers.report_pdf"})
    # Parts that use the same glyphs embed identical font subsets: keep one (-20 % in size).
    writer.compress_identical_objects(remove_duplicates=True, remove_unreferenced=True)
    partial = final.with_name(final.name + ".partial")
    writer.write(partial)
    partial.replace(final)  # a reader never sees half a report
    for part in parts:
        part.unlink()
    parts[0].parent.rmdir()
    return total
