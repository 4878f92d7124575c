"""`hangar.save.report`: the save report as CSV and as one self-contained HTML page.

The page is opened in headless Chromium (Debian `chromium`): the table and the chart must lay
out with real sizes, and a screenshot must show the chart's colours. Skipped when Chromium is
missing (`apt-get install chromium`).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
from cachefactory import make_cache
from support.images import PushedImage
from support.registry import Registry
from workflow import run_workflow, write_list

from hangar import verify
from hangar.imagelist import parse_reference
from hangar.layout import checksum_path, run_lock_path, status_dir
from hangar.save import report
from hangar.save.archive import build_archive
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


def checksum_rows(destination: Path) -> dict[str, str]:
    """name -> sha256 of the archive's checksum file, read as sha256sum would."""
    rows = {}
    for line in checksum_path(destination).read_text().splitlines():
        digest, name = line.split("  ", 1)
        rows[name] = digest
    return rows


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, Path]:
    """A cache and a real split archive of it (build_archive), checked by hangar verify."""
    cache = tmp_path / "cache"
    make_cache(cache, images=3, layer_size=96 * 1024, stale=False)
    destination = tmp_path / "out" / "saved-images.tar.gz"
    destination.parent.mkdir()
    build_archive(cache, destination, "gzip", 256 * 1024, 1)
    log = tmp_path / "logs" / "verify.log"
    log.parent.mkdir()
    lines: list[str] = []
    assert verify.main([str(destination)], out=lines.append) == 0
    log.write_text("".join(f"{line}\n" for line in lines))
    return cache, destination


@pytest.fixture
def written(tmp_path: Path, archived: tuple[Path, Path]) -> tuple[Path, Path]:
    cache, destination = archived
    page, csv = tmp_path / "save-report.html", tmp_path / "save-report.csv"
    write_atomic(run_lock_path(cache), "pid 1\n")
    started = run_lock_path(cache).stat().st_mtime
    run = report.gather_run(
        cache,
        destination,
        tmp_path / "logs" / "verify.log",
        image_list="lists/<b>images</b>.txt",
        arch=("amd64", "arm64"),
        os=("linux",),
        source="mirror.local:5000",
        finished=started + 75.0,
    )
    assert run.started == started
    report.write_report(
        sample_statuses(), page, csv, "saved-image-cache", run=run, earlier={"id-1"}
    )
    return page, csv


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
    assert table["earlier_run"].tolist() == [False, True, False, False]


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
        "earlier": 0,
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
    assert "lists/&lt;b&gt;images&lt;/b&gt;.txt" in page


def test_page_names_the_archive_its_parts_and_checksums(
    written: tuple[Path, Path], archived: tuple[Path, Path]
) -> None:
    cache, destination = archived
    page = written[0].read_text()
    rows = checksum_rows(destination)
    parts = sorted(destination.parent.glob("saved-images.tar.gz.part*"))
    assert len(parts) >= 3
    assert str(destination) in page
    for part in parts:
        size = part.stat().st_size
        cells = f'<td>{part.name}</td><td class="num">'
        assert cells in page
        assert f'<td class="num">{size}</td><td><code class="sha">{rows[part.name]}</code>' in page
    total = sum(part.stat().st_size for part in parts)
    assert f"({total} bytes), {len(parts)} parts" in page
    assert f'<code class="sha">{rows[destination.name]}</code>' in page  # the whole stream
    assert 'Verified</th><td><span class="state-ok">OK: ' in page
    unique = sum(p.stat().st_size for p in (cache / "share" / "sha256").iterdir())
    assert f'<div class="value">{report.human_size(unique)}</div>' in page
    assert "<td>amd64,arm64</td>" in page and "<td>linux</td>" in page
    assert "<td>mirror.local:5000</td>" in page
    assert "Wall time</th><td>1:15 (workflow start to this report)</td>" in page
    assert "resumed: 1 of 4 images from an earlier run" in page


def test_failures_come_first_with_plain_reasons(written: tuple[Path, Path]) -> None:
    page = written[0].read_text()
    failures = page.index('id="failures"')
    assert failures < page.index('id="archive"') < page.index('id="totals"')
    failed = page.index('<tr class="failed">', failures)
    skipped = page.index('<tr class="skipped">', failures)
    assert failed < skipped < page.index("</table>", failures)
    assert "<td>not found: no such image or tag in the registry</td>" in page
    assert "<td>no platform matches arch amd64,arm64</td>" in page


def test_verify_verdict_only_of_this_archive(archived: tuple[Path, Path], tmp_path: Path) -> None:
    _, destination = archived
    log = tmp_path / "logs" / "verify.log"
    verdict, errors = report.verify_verdict(log, checksum_path(destination))
    assert verdict.startswith(f"OK: {destination}") and errors == []
    log.write_text("ERROR: part 1: sha256 mismatch\nFAILED: 1 problem(s) in x\n")
    assert report.verify_verdict(log, checksum_path(destination)) == (
        "FAILED: 1 problem(s) in x",
        ["ERROR: part 1: sha256 mismatch"],
    )
    stamp = checksum_path(destination).stat().st_mtime
    os.utime(log, (stamp - 10, stamp - 10))  # a check of an earlier archive
    assert report.verify_verdict(log, checksum_path(destination)) == ("", [])
    run = report.gather_run(destination.parent, destination, log)
    assert "not checked since it was written" in report.archive_html(run.archive, "", [])


def test_dir_archive_lists_its_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    made = make_cache(cache, images=2, layer_size=8 * 1024, stale=False)
    destination = tmp_path / "saved-images"
    build_archive(cache, destination, "dir", None, 1)
    facts = report.archive_facts(destination)
    assert facts is not None and facts.kind == "dir"
    assert [f.name for f in facts.files] == made.selected_files()
    assert facts.size == sum((destination / name).stat().st_size for name in made.selected_files())
    page = report.archive_html(facts, "", [])
    assert f"<details><summary>{len(facts.files)} files</summary>" in page
    (destination / made.selected_files()[-1]).unlink()
    damaged = report.archive_facts(destination)
    assert damaged is not None and damaged.missing == [made.selected_files()[-1]]
    assert report.archive_facts(tmp_path / "none") is None


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


def test_command_reports_a_cache(
    tmp_path: Path, archived: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    statuses = sample_statuses()
    lines = []
    for _, status in statuses:
        ref = parse_reference(status.reference)
        write_atomic(status_dir(cache) / f"{ref.image_id}.json", status.to_json())
        lines.append(status.reference)
    (tmp_path / "list.txt").write_text("\n".join(reversed(lines[1:])) + "\n")
    page, csv = tmp_path / "r.html", tmp_path / "r.csv"
    args = ["--cache", str(cache), "--html", str(page), "--csv", str(csv)]
    assert report.main(args) == 0
    assert "4 images (2 saved, 1 failed, 1 skipped, 0 invalid lines)" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 4
    assert report.main([*args, "-f", str(tmp_path / "list.txt")]) == 0
    assert pd.read_csv(csv)["image"].tolist() == list(reversed(lines[1:]))  # list order
    assert 'id="archive-files"' not in page.read_text()
    assert report.main([*args, "-d", str(archived[1])]) == 0
    for name in checksum_rows(archived[1]):
        assert f"{name}</" in page.read_text()
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
  order: ['failures', 'archive', 'archive-files', 'run', 'totals', 'chart', 'images']
    .map(id => document.getElementById(id).getBoundingClientRect().top),
  failures: Array.from(document.querySelectorAll('#failures tbody tr'))
    .map(r => [r.className, size(r)[1], getComputedStyle(r.cells[0]).backgroundColor]),
  parts: Array.from(document.querySelectorAll('#archive-files tbody tr'))
    .map(r => [r.cells[0].textContent, size(r.cells[3])[0]]),
  run: Array.from(document.querySelectorAll('#run tr')).map(r => r.cells[1].textContent),
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
def test_table_and_chart_render_in_chromium(
    written: tuple[Path, Path], archived: tuple[Path, Path], tmp_path: Path
) -> None:
    page = written[0].read_text()
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.replace("</body>", MEASURE + "\n</body>"))
    done = chromium(tmp_path, "--dump-dom", measured_page.as_uri())
    match = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout)
    assert match, done.stdout[-2000:]
    result = json.loads(html.unescape(match.group(1)))
    assert result["header"] == list(report.TABLE_HEADINGS.values())
    assert [row[2] for row in result["rows"]] == [s.reference for _, s in sample_statuses()]
    assert all(cells == 10 and height > 10 for cells, height, _ in result["rows"])
    assert result["table"][0] > 600 and result["table"][1] > 100
    assert result["headerColour"] == "rgb(31, 41, 55)"  # the style sheet applied
    assert result["chartIsSvg"] and result["chart"][0] > 800 and result["chart"][1] > 100
    assert result["bytes"][0] > 200 and 0 < result["bytes"][1] < 5  # 5 MiB vs 7000 bytes
    assert result["seconds"][0] > 200 and result["seconds"][1] > 40
    unique = sum(p.stat().st_size for p in (archived[0] / "share" / "sha256").iterdir())
    assert result["totals"] == [
        *["4", "2", "1", "1", "0", "3", "0", "5.0 MiB", report.human_size(unique)],
        *["16.1 s", "4"],
    ]
    assert result["order"] == sorted(result["order"])  # failures first, the table last
    assert [row[0] for row in result["failures"]] == ["failed", "skipped"]
    assert result["failures"][0][2] == "rgb(254, 242, 242)" and result["failures"][0][1] > 10
    parts = sorted(p.name for p in archived[1].parent.glob("*.part*"))
    assert sorted(name for name, _ in result["parts"]) == parts
    assert all(width > 300 for _, width in result["parts"])  # a whole sha256 on one line
    assert result["run"][:4] == [
        "lists/<b>images</b>.txt",
        "amd64,arm64",
        "linux",
        "mirror.local:5000",
    ]


@needs_chromium
def test_screenshot_shows_the_chart(written: tuple[Path, Path], tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", written[0].as_uri())
    width, height, rows = read_png(shot)
    assert (width, height) == (1280, 2000)
    assert colour_count(rows, "#fef2f2") > 5000  # the failed image's row, at the top
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
    config = {"file": "images.txt", "part": True, "part_size": "8K"}
    started = time.time()
    run_workflow(workdir, config, "--cores", "2")
    wall = time.time() - started
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
    assert not table["earlier_run"].any()
    page = (workdir / "save-report.html").read_text()
    assert page.count('<rect class="bytes"') == 4
    assert "4 image(s): 2 saved, 1 failed" in (workdir / "logs" / "report.log").read_text()
    # failures first, in plain words: the failed image, then the skipped one
    failures = page[page.index('id="failures"') : page.index('id="archive"')]
    assert failures.index(missing) < failures.index(sample_images[names[2]].ref)
    assert "<td>not found: no such image or tag in the registry</td>" in failures
    # the archive: every part with its size and the sha256 the checksum file gives it
    destination = workdir / "saved-images.tar.gz"
    rows = checksum_rows(destination)
    parts = sorted(workdir.glob("saved-images.tar.gz.part*"))
    assert len(parts) >= 2 and set(rows) == {p.name for p in parts} | {destination.name}
    for part in parts:
        assert (
            f'<td>{part.name}</td><td class="num">{report.human_size(part.stat().st_size)}</td>'
            f'<td class="num">{part.stat().st_size}</td>'
            f'<td><code class="sha">{rows[part.name]}</code></td>'
        ) in page
    assert f'<code class="sha">{rows[destination.name]}</code>' in page
    assert "not checked since it was written" in page
    # unique bytes: the blobs of share/, each once
    unique = sum(p.stat().st_size for p in (workdir / "saved-image-cache/share/sha256").iterdir())
    assert f'<div class="value">{report.human_size(unique)}</div>' in page
    # the run's context
    assert "<th>Image list</th><td>images.txt</td>" in page
    assert "<th>Arch</th><td>amd64,arm64</td><" in page
    assert "<th>OS</th><td>linux,windows</td>" in page
    assert "<th>Source registry</th><td>as written in the list</td>" in page
    assert "new: every image was saved (or tried) by this run" in page
    shown = re.search(r"<th>Wall time</th><td>([0-9.]+) s \(workflow start", page)
    assert shown and 0 < float(shown.group(1)) <= wall


@pytest.mark.slow
def test_resumed_run_reports_earlier_images_and_the_verify_verdict(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    first = sample_images["library/nginx:1.25"].ref
    write_list(workdir, [first])
    run_workflow(workdir, {"file": "images.txt"}, "--cores", "2")
    page = (workdir / "save-report.html").read_text()
    assert "new: every image was saved (or tried) by this run" in page
    # nginx's base layers are shared with shared-a: counted once in share/
    write_list(workdir, [first, sample_images["rancher/shared-a:1"].ref])
    run_workflow(workdir, {"file": "images.txt"}, "--cores", "2", "verify", "save-report.html")
    page = (workdir / "save-report.html").read_text()
    assert "resumed: 1 of 2 images from an earlier run" in page
    table = pd.read_csv(workdir / "save-report.csv", keep_default_na=False)
    assert table["earlier_run"].tolist() == [True, False]
    verdict = (workdir / "save-verify.txt").read_text().strip()
    assert verdict.startswith("OK: ")
    assert f'<th>Verified</th><td><span class="state-ok">{verdict}</span>' in page
    blobs = (workdir / "saved-image-cache/share/sha256").iterdir()
    unique = sum(p.stat().st_size for p in blobs)
    assert 0 < unique < int(table["bytes"].sum())
    assert f'<div class="value">{report.human_size(unique)}</div>' in page
    size = (workdir / "saved-images.tar.gz").stat().st_size
    assert f"({size} bytes), one file" in page
