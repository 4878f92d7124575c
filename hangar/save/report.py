"""The report of a save: ``save-report.html`` and ``save-report.csv`` from the image statuses.

Every image job leaves ``<cache>/.hangar/status/<id>.json`` (state, reason, saved platforms with
their sizes, the platforms the image offered, seconds, retries). This module turns them into a
table (pandas), writes it as CSV, and renders a single self-contained HTML page for the person
who carries the archive: what failed and why (first), the archive (its files, their sizes and
sha256 from ``DEST.sha256``, the verify verdict when it was checked), the run (list, arch/os,
source registry, wall time, new or resumed), the totals (the per-image sum beside the unique
bytes of ``share/``), a chart of bytes and time per image (inline SVG) and the table. The page
loads nothing from anywhere: no script, no external style sheet, font or image, so it opens
from a USB stick on an air-gapped machine.

The workflow's ``report`` rule writes it after every run; ``python -m hangar.save.report`` writes
it for any cache.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hangar.imagelist import ImageListError, SkippedLine, load_image_list
from hangar.layout import BLOB_DIR, TOP_DIR, checksum_path, run_lock_path, status_dir
from hangar.reasons import plain
from hangar.save.archive import ArchiveError, select
from hangar.status import ImageStatus, unoffered_warning, write_atomic
from hangar.units import human_size
from hangar.verify import Findings, read_checksums

CHART_MAX_ROWS = 60
COLUMNS = (
    "image",
    "state",
    "kind",
    "platforms_saved",
    "platforms_available",
    "platforms_not_selected",
    "bytes",
    "seconds",
    "retries",
    "reason",
    "image_id",
    "earlier_run",
)
TABLE_HEADINGS = {
    "image": "Image",
    "state": "State",
    "kind": "Kind",
    "platforms_saved": "Saved platforms",
    "platforms_available": "Available",
    "platforms_not_selected": "Not selected",
    "bytes": "Size",
    "seconds": "Time",
    "retries": "Retries",
    "reason": "Reason",
}
BYTES_COLOUR = "#2563eb"
SECONDS_COLOUR = "#d97706"
FAILED_COLOUR = "#dc2626"


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _platform(os_name: str, arch: str, variant: str = "", os_version: str = "") -> str:
    text = "/".join(part for part in (os_name, arch, variant) if part)
    return f"{text}:{os_version}" if os_version else text


def _listed(text: str) -> str:
    # The status lists platforms as ``os/arch[/variant][ (os.version)]``: one word each here.
    return text.replace(" (", ":").rstrip(")")


def frame(
    statuses: Sequence[tuple[str, ImageStatus]],
    invalid: Sequence[SkippedLine] = (),
    earlier: Collection[str] = (),
) -> pd.DataFrame:
    """One row per image, in the order given: ``(image id, status)`` pairs; then one per
    invalid line of the list (state ``invalid``, kind ``line``), which was not saved.
    ``earlier``: the ids of the images whose status an earlier run left (``earlier_run``)."""
    rows: list[dict[str, Any]] = []
    for image_id, status in statuses:
        rows.append(
            {
                "image": status.reference,
                "state": status.state,
                "kind": status.kind,
                "platforms_saved": " ".join(
                    _platform(p.OS, p.Arch, p.Variant, p.OsVersion) for p in status.saved
                ),
                "platforms_available": " ".join(_listed(p) for p in status.available),
                "platforms_not_selected": " ".join(_listed(p) for p in status.missing),
                "bytes": status.saved_bytes,
                "seconds": round(float(status.seconds), 3),
                "retries": int(status.retries),
                "reason": status.reason,
                "image_id": image_id,
                "earlier_run": image_id in earlier,
            }
        )
    for line in invalid:
        rows.append(
            {
                "image": line.line,
                "state": "invalid",
                "kind": "line",
                "platforms_saved": "",
                "platforms_available": "",
                "platforms_not_selected": "",
                "bytes": 0,
                "seconds": 0.0,
                "retries": 0,
                "reason": f"{line.where}: {line.reason} (invalid format: line ignored)",
                "image_id": "",
                "earlier_run": False,
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype(
        {"bytes": "int64", "seconds": "float64", "retries": "int64", "earlier_run": "bool"}
    )


def totals(table: pd.DataFrame) -> dict[str, Any]:
    states = table["state"].value_counts()
    platforms = table["platforms_saved"].map(lambda text: len(text.split()) if text else 0)
    return {
        "images": int((table["kind"] != "line").sum()),
        "ok": int(states.get("ok", 0)),
        "failed": int(states.get("failed", 0)),
        "skipped": int(states.get("skipped", 0)),
        "invalid": int(states.get("invalid", 0)),
        "artifacts": int(((table["kind"] == "artifact") & (table["state"] == "ok")).sum()),
        "platforms": int(platforms.sum()),
        "bytes": int(table["bytes"].sum()),
        "seconds": float(table["seconds"].sum()),
        "retries": int(table["retries"].sum()),
        "earlier": int(table["earlier_run"].sum()),
    }


# --- the archive and the run ------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFile:
    """One file of the archive as its checksum file names it; ``size`` None when missing."""

    name: str
    size: int | None
    sha256: str


@dataclass(frozen=True)
class ArchiveFacts:
    destination: Path
    kind: str  # "single", "split" (DEST.partN) or "dir"
    files: tuple[ArchiveFile, ...]  # the file, the parts in order, or the directory's files
    stream_sha256: str  # of the whole split stream ("" unless split)
    checksums: Path

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def missing(self) -> list[str]:
        return [f.name for f in self.files if f.size is None]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _part_order(row: tuple[str, str]) -> tuple[int, str]:
    suffix = row[1].rsplit(".part", 1)
    return (int(suffix[1]) if len(suffix) == 2 and suffix[1].isdigit() else -1, row[1])


def archive_facts(destination: str | Path) -> ArchiveFacts | None:
    """What ``DEST.sha256`` says the archive is, with the sizes on disk; None without one."""
    destination = Path(destination)
    checksums = checksum_path(destination)
    rows = read_checksums(checksums, Findings())
    if rows is None:
        return None
    if destination.is_dir():
        named = sorted(rows, key=lambda row: row[1])
        files = [ArchiveFile(n, _size(destination / n), d) for d, n in named]
        return ArchiveFacts(destination, "dir", tuple(files), "", checksums)
    whole = [digest for digest, name in rows if name == destination.name]
    parts = sorted((r for r in rows if r[1] != destination.name), key=_part_order)
    if parts:
        files = [ArchiveFile(n, _size(destination.parent / n), d) for d, n in parts]
        return ArchiveFacts(
            destination, "split", tuple(files), whole[0] if whole else "", checksums
        )
    files = [ArchiveFile(destination.name, _size(destination), whole[0] if whole else "")]
    return ArchiveFacts(destination, "single", tuple(files), "", checksums)


def verify_verdict(log: str | Path, checksums: Path) -> tuple[str, list[str]]:
    """The last ``OK:``/``FAILED:`` line of the verify log and its ``ERROR:`` lines, when the
    log is not older than the checksum file (a check of this archive); else ``("", [])``."""
    log = Path(log)
    try:
        if log.stat().st_mtime < checksums.stat().st_mtime:
            return "", []
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "", []
    verdicts = [line for line in lines if line.startswith(("OK:", "FAILED:"))]
    if not verdicts:
        return "", []
    return verdicts[-1], [line for line in lines if line.startswith("ERROR:")]


def unique_blob_bytes(cache: Path) -> int | None:
    """The bytes of the distinct blobs the archive holds (``share/sha256/``, each once): what
    the saved images cost once shared layers are counted once. None when the cache cannot say."""
    try:
        selection = select(cache)
    except (ArchiveError, OSError, ValueError):
        return None
    return sum(e.size for e in selection.entries if e.name.startswith(BLOB_DIR + "/"))


def run_started(cache: str | Path) -> float | None:
    """When the run holding (or last holding) the cache's run lock started: the lock file is
    rewritten with the run's pid when the run takes it, at its start."""
    try:
        return run_lock_path(cache).stat().st_mtime
    except OSError:
        return None


def earlier_ids(paths: Iterable[Path], started: float | None) -> set[str]:
    """The images whose status file is older than this run: saved (or skipped) by an earlier
    run and kept, not saved again."""
    if started is None:
        return set()
    earlier = set()
    for path in paths:
        try:
            if Path(path).stat().st_mtime < started:
                earlier.add(Path(path).stem)
        except OSError:
            continue
    return earlier


@dataclass(frozen=True)
class RunFacts:
    """The context of the save the page reports; what is unknown stays empty."""

    image_list: str = ""
    arch: str = ""
    os: str = ""
    source: str = ""
    started: float | None = None
    finished: float | None = None
    archive: ArchiveFacts | None = None
    verdict: str = ""
    verify_errors: list[str] = field(default_factory=list)
    unique_bytes: int | None = None

    @property
    def wall_seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(self.finished - self.started, 0.0)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).replace(microsecond=0).isoformat()


# --- chart -------------------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def chart_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The images the chart shows (all, or the largest) and a note saying which."""
    if len(table) <= CHART_MAX_ROWS:
        return table, ""
    largest = table.sort_values(["bytes", "seconds"], ascending=False).head(CHART_MAX_ROWS)
    shown = table.loc[sorted(largest.index)]
    return shown, f"the {CHART_MAX_ROWS} largest of {len(table)} images"


def chart_svg(table: pd.DataFrame) -> str:
    """Horizontal bars: bytes saved (left panel) and job time (right panel) per image."""
    rows, _ = chart_rows(table)
    label_width, panel_width, gap, row_height, top = 330, 300, 24, 22, 34
    bar_room = panel_width - 72  # the longest bar leaves room for its value label
    width = label_width + 2 * panel_width + gap
    height = top + row_height * max(1, len(rows)) + 10
    max_bytes = max(int(rows["bytes"].max()) if len(rows) else 0, 1)
    max_seconds = max(float(rows["seconds"].max()) if len(rows) else 0.0, 0.001)
    left = label_width
    right = label_width + panel_width + gap
    parts = [
        f'<svg id="chart" role="img" aria-label="bytes and time per image" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="{left}" y="14" font-weight="bold" fill="{BYTES_COLOUR}">Bytes saved '
        f"(max {html.escape(human_size(max_bytes))})</text>",
        f'<text x="{right}" y="14" font-weight="bold" fill="{SECONDS_COLOUR}">Time '
        f"(max {html.escape(human_duration(max_seconds))})</text>",
        f'<line x1="{left}" y1="{top - 6}" x2="{left}" y2="{height - 6}" stroke="#9ca3af"/>',
        f'<line x1="{right}" y1="{top - 6}" x2="{right}" y2="{height - 6}" stroke="#9ca3af"/>',
    ]
    for number, row in enumerate(rows.itertuples(index=False)):
        y = top + number * row_height
        failed = row.state == "failed"
        name = html.escape(_shorten(str(row.image), 48))
        title = html.escape(f"{row.image}: {row.state}")
        colour = FAILED_COLOUR if failed else "#111827"
        parts.append(
            f'<g class="bar-row" data-state="{html.escape(str(row.state))}"><title>{title}'
            f"</title>"
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" fill="{colour}">'
            f"{name}</text>"
        )
        bytes_width = round(bar_room * int(row.bytes) / max_bytes, 1)
        seconds_width = round(bar_room * float(row.seconds) / max_seconds, 1)
        parts.append(
            f'<rect class="bytes" x="{left}" y="{y + 4}" width="{max(bytes_width, 0.5)}" '
            f'height="{row_height - 8}" fill="{BYTES_COLOUR}"/>'
            f'<text x="{left + bytes_width + 4}" y="{y + 15}" fill="#374151">'
            f"{html.escape(human_size(int(row.bytes)))}</text>"
        )
        parts.append(
            f'<rect class="seconds" x="{right}" y="{y + 4}" width="{max(seconds_width, 0.5)}" '
            f'height="{row_height - 8}" fill="{FAILED_COLOUR if failed else SECONDS_COLOUR}"/>'
            f'<text x="{right + seconds_width + 4}" y="{y + 15}" fill="#374151">'
            f"{html.escape(human_duration(float(row.seconds)))}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


# --- page --------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #111827; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
p.meta { color: #4b5563; margin: 0 0 16px; }
.totals { display: flex; flex-wrap: wrap; gap: 12px; }
.total { border: 1px solid #d1d5db; border-radius: 6px; padding: 8px 12px; min-width: 96px; }
.total .value { font-size: 20px; font-weight: bold; }
.total .label { color: #4b5563; font-size: 12px; }
.total.failed .value { color: #dc2626; }
table.images { border-collapse: collapse; font-size: 13px; width: 100%; }
table.images th { background: #1f2937; color: #fff; text-align: left; padding: 6px 8px; }
table.images td { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; vertical-align: top; }
table.images tr:nth-child(even) td { background: #f9fafb; }
table.images td:first-child { min-width: 14em; overflow-wrap: break-word; }
table.images td:last-child { min-width: 10em; max-width: 32em; overflow-wrap: anywhere; }
table.images td.nowrap, span.platform { white-space: nowrap; }
span.num { display: block; text-align: right; white-space: nowrap; }
.state-ok, .state-failed, .state-skipped { white-space: nowrap; }
.state-ok { color: #15803d; font-weight: bold; }
.state-failed { color: #dc2626; font-weight: bold; }
.state-skipped { color: #a16207; font-weight: bold; }
.state-invalid { color: #a16207; font-weight: bold; }
.note { color: #4b5563; font-size: 12px; }
table.facts { border-collapse: collapse; font-size: 13px; margin: 0 0 8px; }
table.facts th { text-align: left; padding: 3px 12px 3px 0; color: #374151; vertical-align: top; }
table.facts thead th { border-bottom: 1px solid #d1d5db; }
table.facts td { padding: 3px 12px 3px 0; vertical-align: top; overflow-wrap: anywhere; }
table.facts td.num { text-align: right; white-space: nowrap; }
table.facts td.detail { color: #4b5563; font-size: 12px; max-width: 40em; }
#failures tr.failed td { background: #fef2f2; }
code.sha { font-size: 12px; }
p.warning { color: #a16207; font-weight: bold; }
"""


def _total_box(value: str, label: str, css: str = "") -> str:
    return (
        f'<div class="total {css}"><div class="value">{html.escape(value)}</div>'
        f'<div class="label">{html.escape(label)}</div></div>'
    )


def table_html(table: pd.DataFrame) -> str:
    """The images as an HTML table (pandas), cells escaped, numbers formatted and aligned."""

    def text(value: Any) -> str:
        return html.escape(str(value)) if str(value) else "&ndash;"

    def platforms(value: Any) -> str:
        names = str(value).split()
        if not names:
            return "&ndash;"
        return "<br>".join(f'<span class="platform">{html.escape(n)}</span>' for n in names)

    def number(formatted: str) -> str:
        return f'<span class="num">{html.escape(formatted)}</span>'

    shown = table[list(TABLE_HEADINGS)].rename(columns=TABLE_HEADINGS)
    formatters: dict[str, Callable[[Any], str]] = {
        heading: text for heading in TABLE_HEADINGS.values()
    }
    formatters["State"] = lambda v: f'<span class="state-{html.escape(v)}">{html.escape(v)}</span>'
    for column in ("Saved platforms", "Available", "Not selected"):
        formatters[column] = platforms
    formatters["Size"] = lambda v: number(human_size(int(v)))
    formatters["Time"] = lambda v: number(human_duration(float(v)))
    formatters["Retries"] = lambda v: number(str(int(v)))
    rendered: str = shown.to_html(
        index=False,
        escape=False,
        border=0,
        classes="images",
        table_id="images",
        formatters=formatters,
        na_rep="",
    )
    return rendered


def _escaped(value: object) -> str:
    return html.escape(str(value)) if str(value) else "&ndash;"


def failures_html(table: pd.DataFrame) -> str:
    """Failed images, then skipped images and invalid lines, each with its plain reason (the
    raw text of a failure beside it); "" when everything was saved."""
    order = {"failed": 0, "skipped": 1, "invalid": 2}
    rows: list[tuple[int, str]] = []
    for row in table.itertuples(index=False):
        if row.state == "failed":
            reason = plain(str(row.reason), str(row.image)).text
            detail = "" if reason == str(row.reason).strip() else str(row.reason)
        elif row.state in ("skipped", "invalid"):
            reason, detail = str(row.reason), ""
        else:
            continue
        state = html.escape(str(row.state))
        rows.append(
            (
                order[str(row.state)],
                f'<tr class="{state}"><td><span class="state-{state}">{state}</span></td>'
                f"<td>{_escaped(row.image)}</td><td>{_escaped(reason)}</td>"
                f'<td class="detail">{html.escape(detail)}</td></tr>',
            )
        )
    if not rows:
        return ""
    rows.sort(key=lambda row: row[0])  # stable: list order within a state
    return (
        '<h2>Not saved</h2>\n<table class="facts" id="failures"><thead><tr><th>State</th>'
        "<th>Image or line</th><th>Reason</th><th>Details</th></tr></thead><tbody>"
        + "".join(text for _, text in rows)
        + "</tbody></table>"
    )


def archive_html(archive: ArchiveFacts | None, verdict: str, errors: Sequence[str]) -> str:
    if archive is None:
        return '<h2>Archive</h2>\n<p id="archive">No archive: its checksum file is missing.</p>'
    kinds = {
        "single": "one file",
        "split": f"{len(archive.files)} parts",
        "dir": f"a directory of {len(archive.files)} files",
    }
    facts = [
        ("Archive", f"<code>{html.escape(str(archive.destination))}</code>"),
        (
            "Size",
            f"{html.escape(human_size(archive.size))} ({archive.size} bytes), "
            f"{html.escape(kinds[archive.kind])}",
        ),
        ("Checksums", f"<code>{html.escape(str(archive.checksums))}</code> (sha256sum format)"),
    ]
    if archive.stream_sha256:
        facts.append(
            (
                "Whole stream sha256",
                f'<code class="sha">{html.escape(archive.stream_sha256)}</code>',
            )
        )
    if archive.missing:
        facts.append(("Missing", html.escape(", ".join(archive.missing))))
    if verdict:
        css = "state-ok" if verdict.startswith("OK:") else "state-failed"
        shown = [f'<span class="{css}">{html.escape(verdict)}</span>']
        shown += [html.escape(line) for line in errors[:20]]
        if len(errors) > 20:
            shown.append(f"… and {len(errors) - 20} more (logs/verify.log)")
        facts.append(("Verified", "<br>".join(shown)))
    else:
        facts.append(
            (
                "Verified",
                "not checked since it was written: <code>hangar verify "
                f"{html.escape(str(archive.destination))}</code>",
            )
        )
    rows = "".join(
        f'<tr><td>{html.escape(f.name)}</td><td class="num">'
        f"{'missing' if f.size is None else html.escape(human_size(f.size))}</td>"
        f'<td class="num">{"" if f.size is None else f.size}</td>'
        f'<td><code class="sha">{html.escape(f.sha256)}</code></td></tr>'
        for f in archive.files
    )
    files = (
        '<table class="facts" id="archive-files"><thead><tr><th>File</th><th>Size</th>'
        f"<th>Bytes</th><th>sha256</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    if len(archive.files) > 20:
        files = f"<details><summary>{len(archive.files)} files</summary>{files}</details>"
    return (
        f'<h2>Archive</h2>\n<table class="facts" id="archive"><tbody>{_fact_rows(facts)}'
        f"</tbody></table>\n{files}"
    )


def _fact_rows(facts: Sequence[tuple[str, str]]) -> str:
    """Rows of (label, value already escaped)."""
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in facts)


def run_html(run: RunFacts, summary: dict[str, Any]) -> str:
    images = summary["images"]
    if summary["earlier"] == 0:
        kind = "new: every image was saved (or tried) by this run"
    elif summary["earlier"] >= images:
        kind = f"resumed: all {images} images from an earlier run, none saved again"
    else:
        kind = f"resumed: {summary['earlier']} of {images} images from an earlier run"
    wall = run.wall_seconds
    facts = [
        ("Image list", _escaped(run.image_list)),
        ("Arch", _escaped(run.arch)),
        ("OS", _escaped(run.os)),
        ("Source registry", html.escape(run.source) if run.source else "as written in the list"),
        ("Started", html.escape(_clock(run.started)) if run.started is not None else "&ndash;"),
        (
            "Wall time",
            f"{html.escape(human_duration(wall))} (workflow start to this report)"
            if wall is not None
            else "&ndash;",
        ),
        ("Run", html.escape(kind)),
    ]
    return f'<h2>Run</h2>\n<table class="facts" id="run"><tbody>{_fact_rows(facts)}</tbody></table>'


def render_html(
    table: pd.DataFrame,
    title: str,
    generated: str,
    source: str,
    run: RunFacts | None = None,
    warnings: Sequence[str] = (),
) -> str:
    run = run or RunFacts()
    summary = totals(table)
    _, chart_note = chart_rows(table)
    unique = "–" if run.unique_bytes is None else human_size(run.unique_bytes)
    boxes = [
        _total_box(str(summary["images"]), "images"),
        _total_box(str(summary["ok"]), "saved"),
        _total_box(str(summary["failed"]), "failed", "failed" if summary["failed"] else ""),
        _total_box(str(summary["skipped"]), "no matching platform"),
        _total_box(str(summary["invalid"]), "invalid lines skipped"),
        _total_box(str(summary["platforms"]), "platforms saved"),
        _total_box(str(summary["artifacts"]), "artifacts saved"),
        _total_box(human_size(summary["bytes"]), "sum of the images"),
        _total_box(unique, "unique blobs (share/)"),
        _total_box(human_duration(summary["seconds"]), "job time (sum)"),
        _total_box(str(summary["retries"]), "retries"),
    ]
    note = f'<p class="note">Showing {html.escape(chart_note)}.</p>' if chart_note else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Generated {html.escape(generated)} from {html.escape(source)}.
The same table is in the CSV file beside this page.</p>
{failures_html(table)}
{archive_html(run.archive, run.verdict, run.verify_errors)}
{run_html(run, summary)}
<h2>Totals</h2>
<div class="totals" id="totals">
{chr(10).join(boxes)}
</div>
{"".join(f'<p class="warning">{html.escape(line)}</p>' for line in warnings)}
<p class="note">Sum of the images: each image's platforms counted in full. Unique blobs: what
the archive holds, every layer shared between images counted once.</p>
<h2>Bytes and time per image</h2>
{note}
{chart_svg(table)}
<h2>Images</h2>
{table_html(table)}
</body>
</html>
"""


# --- files -------------------------------------------------------------------------------------


def run_job(
    html_path: str | Path,
    csv_path: str | Path,
    log_path: str | Path,
    *,
    cache: str | Path,
    image_list: str,
    source: str,
    arch: Sequence[str],
    os: Sequence[str],
    destination: str | Path,
    verify_log: str | Path,
) -> None:
    """The workflow's report job, run in Snakemake's own process (no interpreter start): the
    statuses of the listed images, the archive and the run's context."""
    listed = load_image_list(image_list, source)
    image_ids = dict.fromkeys(entry.ref.image_id for entry in listed.entries)
    paths = [status_dir(Path(cache)) / f"{image_id}.json" for image_id in image_ids]
    statuses = read_statuses(paths)
    run = gather_run(
        Path(cache),
        Path(destination),
        Path(verify_log),
        image_list=image_list,
        arch=arch,
        os=os,
        source=source,
        finished=time.time(),
    )
    unoffered = unoffered_warning((status for _, status in statuses), arch, os)
    summary = write_report(
        statuses,
        Path(html_path),
        Path(csv_path),
        str(cache),
        invalid=listed.skipped,
        run=run,
        earlier=earlier_ids(paths, run.started),
        warnings=[unoffered] if unoffered else [],
    )
    unique = f" ({human_size(run.unique_bytes)} unique)" if run.unique_bytes is not None else ""
    wall = f"; wall time {human_duration(run.wall_seconds)}" if run.wall_seconds is not None else ""
    with open(log_path, "w") as log:
        print(
            f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
            f"{summary['skipped']} without a matching platform, {summary['invalid']} invalid "
            f"line(s) skipped; {summary['platforms']} platform(s), {summary['artifacts']} "
            f"artifact(s), {human_size(summary['bytes'])}{unique}, {summary['seconds']:.1f} s of "
            f"job time, {summary['retries']} retries; {summary['earlier']} from an earlier run"
            + wall,
            file=log,
        )
        if unoffered:
            print(unoffered, file=log)


def read_statuses(paths: Iterable[Path]) -> list[tuple[str, ImageStatus]]:
    return [(Path(path).stem, ImageStatus.read(path)) for path in paths]


def write_report(
    statuses: Sequence[tuple[str, ImageStatus]],
    html_path: Path,
    csv_path: Path,
    source: str,
    title: str = "Image save report",
    invalid: Sequence[SkippedLine] = (),
    run: RunFacts | None = None,
    earlier: Collection[str] = (),
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the page (``warnings`` below its totals) and the CSV; returns the totals."""
    table = frame(statuses, invalid, earlier)
    generated = datetime.now().astimezone().replace(microsecond=0).isoformat()
    write_atomic(csv_path, table.to_csv(index=False))
    write_atomic(html_path, render_html(table, title, generated, source, run, warnings))
    return totals(table)


def gather_run(
    cache: Path,
    destination: Path | None,
    verify_log: Path | None = None,
    *,
    image_list: str = "",
    arch: Sequence[str] = (),
    os: Sequence[str] = (),
    source: str = "",
    finished: float | None = None,
) -> RunFacts:
    """The run's context from the cache (run start, unique blobs) and the archive beside it
    (checksum file, sizes, the verify log when it is newer than the archive)."""
    archive = archive_facts(destination) if destination is not None else None
    errors: list[str]
    verdict, errors = "", []
    if archive is not None and verify_log is not None:
        verdict, errors = verify_verdict(verify_log, archive.checksums)
    return RunFacts(
        image_list=image_list,
        arch=",".join(arch),
        os=",".join(os),
        source=source,
        started=run_started(cache),
        finished=finished,
        archive=archive,
        verdict=verdict,
        verify_errors=errors,
        unique_bytes=unique_blob_bytes(cache),
    )


def status_files(
    cache: Path, image_list: Path | None, source: str = ""
) -> tuple[list[Path], list[SkippedLine]]:
    """The status files to report: those of the list (in list order), or all of the cache;
    and the list's invalid lines."""
    directory = status_dir(cache)
    if image_list is None:
        return sorted(directory.glob("*.json")), []
    read = load_image_list(image_list, source)
    paths = [directory / f"{entry.ref.image_id}.json" for entry in read.entries]
    return [path for path in paths if path.is_file()], read.skipped


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hangar report",
        description="Write save-report.html (self-contained: table, chart, totals) and "
        "save-report.csv from the image statuses of a cache.",
    )
    parser.add_argument("--cache", type=Path, default=Path(TOP_DIR))
    parser.add_argument(
        "-f", "--file", type=Path, help="report only this list's images, in its order"
    )
    parser.add_argument("-s", "--source", default="", help="the save's -s/--source registry")
    parser.add_argument(
        "-d", "--destination", type=Path, help="the save's archive: its files and checksums"
    )
    parser.add_argument("--html", type=Path, default=Path("save-report.html"))
    parser.add_argument("--csv", type=Path, default=Path("save-report.csv"))
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths, invalid = status_files(args.cache, args.file, args.source)
        statuses = read_statuses(paths)
    except (ImageListError, OSError, ValueError, TypeError) as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if not statuses:
        print(f"error: no image status in {status_dir(args.cache)}", file=sys.stderr)
        return 1
    run = gather_run(
        args.cache,
        args.destination,
        image_list=str(args.file or ""),
        source=args.source,
    )
    earlier = earlier_ids(paths, run.started)
    summary = write_report(
        statuses, args.html, args.csv, str(args.cache), invalid=invalid, run=run, earlier=earlier
    )
    print(
        f"{args.html}, {args.csv}: {summary['images']} images ({summary['ok']} saved, "
        f"{summary['failed']} failed, {summary['skipped']} skipped, "
        f"{summary['invalid']} invalid lines), "
        f"{human_size(summary['bytes'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
