"""`hangar.save.report`: the save report as CSV and as one self-contained HTML page.

The page is opened in headless Chromium (Debian `chromium`): the table and the chart must lay
out with real sizes, and a screenshot must show the chart's colours. Skipped when Chromium is
missing (`apt-get install chromium`).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pandas as pd
import pytest
from support.images import PushedImage
from support.registry import Registry
from workflow import run_workflow, write_list

from hangar.imagelist import parse_reference
from hangar.layout import status_dir
from hangar.save import report
from hangar.status import ImageStatus, SavedPlatform, write_atomic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def platform(arch: str, size: int, variant: str = "", os_name: str = "linux") -> SavedPlatform:
    return SavedPlatform("sha256:" + "a" * 64, arch, os_name, "f" * 64, variant, "", size)


def sample_statuses() -> list[tuple[str, ImageStatus]]:
    ok = ImageStatus(
        "reg.local/library/nginx:1.25",
        "reg.local/library/nginx",
        "1.25",
        "ok",
        saved=[platform("amd64", 3 << 20), platform("arm64", 2 << 20, "v8")],
        available=["linux/amd64", "linux/arm64/v8", "linux/arm/v7"],
        missing=["linux/arm/v7"],
        seconds=12.5,
        retries=1,
    )
    windows = ImageStatus(
        "reg.local/rancher/win:3.6",
        "reg.local/rancher/win",
        "3.6",
        "ok",
        saved=[
            SavedPlatform("sha256:" + "b" * 64, "amd64", "windows", "e" * 64, "", "10.0.1", 7000)
        ],
        available=["windows/amd64 (10.0.1)"],
        seconds=3.0,
    )
    failed = ImageStatus(
        "reg.local/rancher/gone:1",
        "reg.local/rancher/gone",
        "1",
        "failed",
        reason="manifest unknown: <script>alert(1)</script>",
        seconds=0.4,
        retries=3,
    )
    skipped = ImageStatus(
        "reg.local/rancher/s390x:1",
        "reg.local/rancher/s390x",
        "1",
        "skipped",
        reason="no platform matches arch amd64,arm64",
        available=["linux/s390x"],
        missing=["linux/s390x"],
        seconds=0.2,
    )
    return [(f"id-{n}", status) for n, status in enumerate([ok, windows, failed, skipped])]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Path]:
    html, csv = tmp_path / "save-report.html", tmp_path / "save-report.csv"
    report.write_report(sample_statuses(), html, csv, "saved-image-cache")
    return html, csv


def test_csv_holds_one_row_per_image(written: tuple[Path, Path]) -> None:
    table = pd.read_csv(written[1], keep_default_na=False)
    assert list(table.columns) == list(report.COLUMNS)
    assert table["state"].tolist() == ["ok", "ok", "failed", "skipped"]
    assert table["platforms_saved"].tolist()[:2] == [
        "linux/amd64 linux/arm64/v8",
        "windows/amd64:10.0.1",
    ]
    assert table["platforms_available"][1] == "windows/amd64:10.0.1"
    assert table["platforms_not_selected"][0] == "linux/arm/v7"
    assert table["bytes"].tolist() == [5 << 20, 7000, 0, 0]
    assert table["seconds"].tolist() == [12.5, 3.0, 0.4, 0.2]
    assert table["retries"].tolist() == [1, 0, 3, 0]
    assert table["image_id"].tolist() == ["id-0", "id-1", "id-2", "id-3"]


def test_totals() -> None:
    totals = report.totals(report.frame(sample_statuses()))
    assert totals == {
        "images": 4,
        "ok": 2,
        "failed": 1,
        "skipped": 1,
        "invalid": 0,
        "artifacts": 0,
        "platforms": 3,
        "bytes": (5 << 20) + 7000,
        "seconds": pytest.approx(16.1),
        "retries": 4,
    }


def test_page_is_self_contained_and_escaped(written: tuple[Path, Path]) -> None:
    page = written[0].read_text()
    assert "<script" not in page.replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<link""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count('<rect class="bytes"') == 4
    assert page.count('<rect class="seconds"') == 4
    assert '<table class="dataframe images" id="images">' in page
    assert "5.0 MiB" in page and "12.5 s" in page


def test_chart_shows_the_largest_images_of_a_long_list() -> None:
    statuses = []
    for number in range(report.CHART_MAX_ROWS + 15):
        status = ImageStatus(f"r.local/i{number}:1", f"r.local/i{number}", "1", "ok")
        status.saved = [platform("amd64", 1000 * (number + 1))]
        statuses.append((f"id{number}", status))
    table = report.frame(statuses)
    shown, note = report.chart_rows(table)
    assert len(shown) == report.CHART_MAX_ROWS
    assert shown["image"].iloc[0] == "r.local/i15:1"  # the 15 smallest are left out, order kept
    assert note == f"the {report.CHART_MAX_ROWS} largest of {report.CHART_MAX_ROWS + 15} images"
    assert f"Showing {note}." in report.render_html(table, "t", "now", "cache")


def test_command_reports_a_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    statuses = sample_statuses()
    lines = []
    for _, status in statuses:
        ref = parse_reference(status.reference)
        write_atomic(status_dir(cache) / f"{ref.image_id}.json", status.to_json())
        lines.append(status.reference)
    (tmp_path / "list.txt").write_text("\n".join(reversed(lines[1:])) + "\n")
    html, csv = tmp_path / "r.html", tmp_path / "r.csv"
    args = ["--cache", str(cache), "--html", str(html), "--csv", str(csv)]
    assert report.main(args) == 0
    assert "4 images (2 saved, 1 failed, 1 skipped, 0 invalid lines)" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 4
    assert report.main([*args, "-f", str(tmp_path / "list.txt")]) == 0
    assert pd.read_csv(csv)["image"].tolist() == list(reversed(lines[1:]))  # list order
    assert report.main(["--cache", str(tmp_path / "none")]) == 1
    assert "no image status" in capsys.readouterr().err


# --- in a browser -------------------------------------------------------------------------------

MEASURE = """<script>
const table = document.getElementById('images');
const chart = document.getElementById('chart');
const size = (e) => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
const result = {
  table: size(table),
  header: Array.from(table.tHead.rows[0].cells).map(c => c.textContent),
  rows: Array.from(table.tBodies[0].rows)
    .map(r => [r.cells.length, size(r)[1], r.cells[0].textContent]),
  headerColour: getComputedStyle(table.tHead.rows[0].cells[0]).backgroundColor,
  chartIsSvg: chart instanceof SVGSVGElement,
  chart: size(chart),
  bytes: Array.from(chart.querySelectorAll('rect.bytes')).map(r => r.getBBox().width),
  seconds: Array.from(chart.querySelectorAll('rect.seconds')).map(r => r.getBBox().width),
  totals: Array.from(document.querySelectorAll('.total .value')).map(e => e.textContent),
};
const out = document.createElement('pre');
out.id = 'measured';
out.textContent = JSON.stringify(result);
document.body.appendChild(out);
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + predictor) & 0xFF
        rows.append(bytes(line[i] for i in range(stride) if i % channels < 3))
        previous = line
    return width, height, rows


def colour_count(rows: list[bytes], hex_colour: str) -> int:
    target = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(1 for row in rows for i in range(0, len(row), 3) if row[i : i + 3] == target)


@needs_chromium
def test_table_and_chart_render_in_chromium(written: tuple[Path, Path], tmp_path: Path) -> None:
    page = written[0].read_text()
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.replace("</body>", MEASURE + "\n</body>"))
    done = chromium(tmp_path, "--dump-dom", measured_page.as_uri())
    match = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout)
    assert match, done.stdout[-2000:]
    result = json.loads(match.group(1).replace("&amp;", "&").replace("&lt;", "<"))
    assert result["header"] == list(report.TABLE_HEADINGS.values())
    assert [row[2] for row in result["rows"]] == [s.reference for _, s in sample_statuses()]
    assert all(cells == 10 and height > 10 for cells, height, _ in result["rows"])
    assert result["table"][0] > 600 and result["table"][1] > 100
    assert result["headerColour"] == "rgb(31, 41, 55)"  # the style sheet applied
    assert result["chartIsSvg"] and result["chart"][0] > 800 and result["chart"][1] > 100
    assert result["bytes"][0] > 200 and 0 < result["bytes"][1] < 5  # 5 MiB vs 7000 bytes
    assert result["seconds"][0] > 200 and result["seconds"][1] > 40
    assert result["totals"] == ["4", "2", "1", "1", "0", "3", "0", "5.0 MiB", "16.1 s", "4"]


@needs_chromium
def test_screenshot_shows_the_chart(written: tuple[Path, Path], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", written[0].as_uri())
    width, height, rows = read_png(shot)
    assert (width, height) == (1280, 900)
    assert colour_count(rows, report.BYTES_COLOUR) > 2000  # the byte bars
    assert colour_count(rows, report.SECONDS_COLOUR) > 2000  # the time bars
    assert colour_count(rows, "#1f2937") > 5000  # the table's header row


# --- in the workflow ------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_writes_the_report(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    names = ["library/nginx:1.25", "rancher/windows-app:3.6", "rancher/s390x-only:1.0"]
    missing = f"{registry.host}/rancher/missing:1"
    write_list(workdir, [sample_images[n].ref for n in names] + [missing])
    run_workflow(workdir, {"file": "images.txt"}, "--cores", "2")
    table = pd.read_csv(workdir / "save-report.csv", keep_default_na=False)
    assert table["image"].tolist() == [sample_images[n].ref for n in names] + [missing]
    assert table["state"].tolist() == ["ok", "ok", "skipped", "failed"]
    assert table["platforms_saved"][0] == "linux/amd64 linux/arm64/v8"
    assert table["platforms_saved"][1] == "linux/amd64 windows/amd64:10.0.17763.2114"
    status_files = sorted((workdir / "saved-image-cache" / ".hangar" / "status").glob("*.json"))
    sizes = {}
    for path in status_files:
        status = ImageStatus.read(path)
        sizes[status.reference] = sum(p.Size for p in status.saved)
    assert dict(zip(table["image"], table["bytes"], strict=True)) == sizes
    assert (table["seconds"] > 0).all()
    assert "manifest unknown" in table["reason"][3]
    page = (workdir / "save-report.html").read_text()
    assert page.count('<rect class="bytes"') == 4
    assert "4 image(s): 2 saved, 1 failed" in (workdir / "logs" / "report.log").read_text()
