"""The PDF report: parts rendered per search page, merged and numbered across the document."""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fpdf", reason="fpdf2 is a runtime dependency of the PDF reports")
pytest.importorskip("pypdf", reason="pypdf is a runtime dependency of the PDF reports")

from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader

from consumers import report_pdf, reports

TITLE = "Orders report"
PER_PAGE = report_pdf.rows_per_page()
DEJAVU = report_pdf.find_fonts()
needs_dejavu = pytest.mark.skipif(
    not DEJAVU or "DejaVu" not in DEJAVU[0].name, reason="DejaVu Sans is not on this machine"
)


def write_parts(
    folder: Path,
    pages: Sequence[Sequence[Sequence[Any]]],
    title: str = TITLE,
    fonts: Sequence[Path] = DEJAVU,
) -> list[Path]:
    """The parts as the consumer writes them: one file per search page, in order."""
    folder.mkdir()
    parts = []
    for number, rows in enumerate(pages):
        part = folder / f"page-{number:05d}.pdf"
        pdf = report_pdf.render_page(rows, reports.COLUMNS, number, title, fonts=fonts)
        part.write_bytes(pdf)
        parts.append(part)
    return parts


def texts(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(path).pages]


def order_ids(pages: list[str]) -> list[int]:
    """The first cell of every table row: lines between the header and the footer."""
    lines = [line for text in pages for line in text.splitlines()[2:-1]]
    return [int(line.split()[0]) for line in lines if line[:1].isdigit()]


def search_pages(rows: int) -> list[list[tuple[Any, ...]]]:
    return [reports.search({"rows": rows}, page) for page in range(-(-rows // 500))]


def test_a_1000_row_report_in_two_parts_merges_into_one_document_numbered_throughout(
    tmp_path: Path,
) -> None:
    # Given: two search pages of 500 rows, each rendered as a part
    pages = search_pages(1000)
    parts = write_parts(tmp_path / "parts", pages)
    final = tmp_path / "report.pdf"

    # When
    count = report_pdf.merge(parts, final, TITLE)

    # Then: the parts' pages in order, header on each, numbered "Page n of N" across the whole
    expected = 2 * math.ceil(500 / PER_PAGE)
    assert count == expected
    assert len(PdfReader(final).pages) == expected
    pages_text = texts(final)
    for number, text in enumerate(pages_text, start=1):
        assert TITLE in text
        assert " ".join(reports.COLUMNS) in text
        assert re.findall(r"Page \d+ of \d+", text) == [f"Page {number} of {expected}"]
    first, last = pages[0][0], pages[1][-1]
    assert f"0 {first[1]} {first[2]} {first[3]} {first[4]:.2f}" in pages_text[0]
    assert f"999 {last[1]} {last[2]} {last[3]} {last[4]:.2f}" in pages_text[-1]
    assert order_ids(pages_text) == list(range(1000))
    # and the parts are gone with their folder, as with the CSV
    assert sorted(tmp_path.iterdir()) == [final]
    assert PdfReader(final).metadata.title == TITLE  # type: ignore[union-attr]


def test_an_empty_report_is_one_page_with_the_header(tmp_path: Path) -> None:
    # Given
    parts = write_parts(tmp_path / "parts", [[]])

    # When
    count = report_pdf.merge(parts, tmp_path / "report.pdf", TITLE)

    # Then
    assert count == 1
    (text,) = texts(tmp_path / "report.pdf")
    assert " ".join(reports.COLUMNS) in text
    assert "No rows." in text
    assert "Page 1 of 1" in text


def test_a_search_page_the_filter_emptied_adds_no_page(tmp_path: Path) -> None:
    # Given: a region filter left the last search page without rows
    rows = reports.search({"rows": 120, "region": "north"}, 0)
    parts = write_parts(tmp_path / "parts", [rows, []])

    # When
    count = report_pdf.merge(parts, tmp_path / "report.pdf", TITLE)

    # Then
    assert count == math.ceil(len(rows) / PER_PAGE)
    assert "No rows." not in "".join(texts(tmp_path / "report.pdf"))


def test_rendering_is_deterministic() -> None:
    # Given
    rows = reports.search({"rows": 100}, 0)

    # When
    a = report_pdf.render_page(rows, reports.COLUMNS, 0, TITLE)
    b = report_pdf.render_page(rows, reports.COLUMNS, 0, TITLE)

    # Then: a retried attempt writes the same part
    assert a == b


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


HOSTILE: list[Any] = [
    "x" * 100_000,
    "line one\nline two\r\nline\tthree",
    "\x00\x07\x1b[31mred\x7f\x9b",
    "\u202eevil\u200b\ufeff",
    "lone \ud800 surrogate",
    "\U0010ffff private \ue000",
    "Page 1 of 2",
    "(unbalanced \\ parens",
    "{nb}",
    "🙂 e\u0301",
    10**5000,
    -(10**20),
    1e308,
    -1e-308,
    float("nan"),
    float("-inf"),
    Decimal("1e999999"),
    Decimal("sNaN"),
    Decimal("-0.005"),
    None,
    True,
    b"\x00bytes",
    Unprintable(),
]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__)
def test_hostile_values_never_make_rendering_fail(tmp_path: Path, value: Any) -> None:
    # Given: the value in every column, and rows shorter and longer than the columns
    rows: list[Sequence[Any]] = [(value,) * 5, (value,), (value,) * 9, ()]

    title = value if isinstance(value, str) else TITLE

    # When
    parts = write_parts(tmp_path / "parts", [rows], fonts=DEJAVU, title=title)
    count = report_pdf.merge(parts, tmp_path / "report.pdf", title)

    # Then
    assert count == 1
    (text,) = texts(tmp_path / "report.pdf")
    assert " ".join(reports.COLUMNS) in text
    assert text.count("Page 1 of 1") == 1


@needs_dejavu
def test_non_latin_text_is_drawn_with_dejavu_and_what_it_lacks_is_marked() -> None:
    # Given
    rows = [(1, "Zürich", "Ελλάδα", "Москва", "東京")]

    # When
    pdf = report_pdf.render_page(rows, reports.COLUMNS, 0, "Zürich 東京", fonts=DEJAVU)

    # Then: Latin, Greek and Cyrillic as they are; CJK, not in DejaVu, as U+FFFD each
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Zürich Ελλάδα Москва \ufffd\ufffd" in text
    assert "Zürich \ufffd\ufffd" in text


def test_without_a_unicode_font_the_core_font_shows_latin_1_and_question_marks() -> None:
    # Given
    rows = [(1, "Zürich", "Ελλάδα", "東京", 2.5)]

    # When
    pdf = report_pdf.render_page(rows, reports.COLUMNS, 0, TITLE, fonts=())

    # Then
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Zürich ?????? ?? 2.50" in text


def test_fonts_come_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given / When / Then
    monkeypatch.setenv("REPORTS_PDF_FONTS", "")
    assert report_pdf.find_fonts() == ()
    monkeypatch.setenv("REPORTS_PDF_FONTS", "/a/main.ttf:/b/cjk.ttf")
    assert report_pdf.find_fonts() == (Path("/a/main.ttf"), Path("/b/cjk.ttf"))


@pytest.mark.parametrize("text", [None, "Page 1 in italics"])
def test_merge_refuses_what_render_page_did_not_make(tmp_path: Path, text: str | None) -> None:
    # Given: a PDF without the page-number footer, blank or with text in the footer's font
    other = FPDF()
    other.add_page()
    if text:
        other.set_font(*report_pdf.NUMBER_FONT, size=report_pdf.FOOTER_PT)
        other.cell(text=text)
    (tmp_path / "parts").mkdir()
    foreign = tmp_path / "parts" / "foreign.pdf"
    foreign.write_bytes(bytes(other.output()))

    # When / Then
    with pytest.raises(ValueError, match="not a part from render_page"):
        report_pdf.merge([foreign], tmp_path / "report.pdf", TITLE)
    assert foreign.exists()  # nothing is removed when the merge fails
    assert not (tmp_path / "report.pdf").exists()


def test_merge_needs_a_part(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one part"):
        report_pdf.merge([], tmp_path / "report.pdf", TITLE)


cell_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),
    st.text(max_size=80),
    st.binary(max_size=20),
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(st.lists(cell_values, max_size=7), max_size=70),
    columns=st.lists(st.text(max_size=20), max_size=6),
    title=st.text(max_size=60),
    page_number=st.integers(min_value=0, max_value=10_000),
    core_font=st.booleans(),
)
def test_any_rows_render_to_a_parseable_pdf(
    rows: list[list[Any]], columns: list[str], title: str, page_number: int, core_font: bool
) -> None:
    # Given: any rows, columns and title, with DejaVu or the core font
    fonts = () if core_font else DEJAVU

    # When
    pdf = report_pdf.render_page(rows, columns, page_number, title, fonts=fonts)

    # Then
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == max(1, math.ceil(len(rows) / PER_PAGE))
    assert all(
        f"Page {n} of {len(reader.pages)}" in page.extract_text()
        for n, page in enumerate(reader.pages, start=1)
    )


@settings(max_examples=10, deadline=None, database=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=2 * PER_PAGE + 1), min_size=1, max_size=4))
def test_any_parts_merge_numbered_in_order(sizes: list[int]) -> None:
    # Given: parts of any sizes, empty ones included, with consecutive order ids
    ids = iter(range(sum(sizes)))
    pages = [[(next(ids), "r", "p", 1, 1.0) for _ in range(size)] for size in sizes]
    with tempfile.TemporaryDirectory() as tmp:
        parts = write_parts(Path(tmp) / "parts", pages)

        # When
        count = report_pdf.merge(parts, Path(tmp) / "report.pdf", TITLE)

        # Then: every row once, in order, and the pages numbered 1..N
        text = texts(Path(tmp) / "report.pdf")
    expected = sum(math.ceil(k / PER_PAGE) for k in sizes) or 1
    assert count == len(text) == expected
    footers = [re.findall(r"Page \d+ of \d+", t) for t in text]
    assert footers == [[f"Page {n} of {count}"] for n in range(1, count + 1)]
    assert order_ids(text) == list(range(sum(sizes)))


def test_the_first_page_renders_to_an_image(tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        # .ci/run installs it: a missing one there is a failure, not a skip.
        message = "pdftoppm (Debian's poppler-utils) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Given: a 1,000-row report
    final = tmp_path / "report.pdf"
    report_pdf.merge(write_parts(tmp_path / "parts", search_pages(1000)), final, TITLE)

    # When: poppler draws the first page at 60 dpi
    drawn = subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(final), str(tmp_path / "out")],
        check=True,
        capture_output=True,
        timeout=60,
    )

    # Then: an A4 page with ink on it, and poppler found nothing to complain about
    (png,) = tmp_path.glob("out*.png")
    with Image.open(png) as image:
        assert image.height == 702  # A4 (297 mm) at 60 dpi
        assert round(image.height / image.width, 2) == round(297 / 210, 2)
        histogram = image.convert("L").histogram()
    assert sum(histogram[:80]) > 1000  # text
    assert histogram[255] > sum(histogram) / 2  # mostly white paper
    assert drawn.stderr == b""
