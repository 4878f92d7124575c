"""The report of a save: ``save-report.html`` and ``save-report.csv`` from the image statuses.

Every image job leaves ``<cache>/.hangar/status/<id>.json`` (state, reason, saved platforms with
their sizes, the platforms the image offered, seconds, retries). This module turns them into a
table (pandas), writes it as CSV, and renders a single self-contained HTML page: the totals, a
chart of bytes and time per image (inline SVG) and the table. The page loads nothing from
anywhere: no script, no external style sheet, font or image, so it opens from a USB stick on an
air-gapped machine.

The workflow's ``report`` rule writes it after every run; ``python -m hangar.save.report`` writes
it for any cache.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hangar.imagelist import ImageListError, SkippedLine, load_image_list
from hangar.layout import TOP_DIR, status_dir
from hangar.status import ImageStatus, write_atomic
from hangar.units import human_size

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
    statuses: Sequence[tuple[str, ImageStatus]], invalid: Sequence[SkippedLine] = ()
) -> pd.DataFrame:
    """One row per image, in the order given: ``(image id, status)`` pairs; then one per
    invalid line of the list (state ``invalid``, kind ``line``), which was not saved."""
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
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.astype({"bytes": "int64", "seconds": "float64", "retries": "int64"})


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
    }


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


def render_html(table: pd.DataFrame, title: str, generated: str, source: str) -> str:
    summary = totals(table)
    _, chart_note = chart_rows(table)
    boxes = [
        _total_box(str(summary["images"]), "images"),
        _total_box(str(summary["ok"]), "saved"),
        _total_box(str(summary["failed"]), "failed", "failed" if summary["failed"] else ""),
        _total_box(str(summary["skipped"]), "no matching platform"),
        _total_box(str(summary["invalid"]), "invalid lines skipped"),
        _total_box(str(summary["platforms"]), "platforms saved"),
        _total_box(str(summary["artifacts"]), "artifacts saved"),
        _total_box(human_size(summary["bytes"]), "saved (compressed)"),
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
<div class="totals" id="totals">
{chr(10).join(boxes)}
</div>
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
    status_paths: Iterable[str | Path],
    html_path: str | Path,
    csv_path: str | Path,
    cache: str | Path,
    image_list: str | Path,
    source: str,
    log_path: str | Path,
) -> None:
    """The workflow's report job, run in Snakemake's own process (no interpreter start)."""
    statuses = read_statuses(Path(path) for path in status_paths)
    summary = write_report(
        statuses,
        Path(html_path),
        Path(csv_path),
        str(cache),
        invalid=load_image_list(image_list, source).skipped,
    )
    with open(log_path, "w") as log:
        print(
            f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
            f"{summary['skipped']} without a matching platform, {summary['invalid']} invalid "
            f"line(s) skipped; {summary['platforms']} platform(s), {summary['artifacts']} "
            f"artifact(s), {human_size(summary['bytes'])}, {summary['seconds']:.1f} s of job "
            f"time, {summary['retries']} retries",
            file=log,
        )


def read_statuses(paths: Iterable[Path]) -> list[tuple[str, ImageStatus]]:
    return [(Path(path).stem, ImageStatus.read(path)) for path in paths]


def write_report(
    statuses: Sequence[tuple[str, ImageStatus]],
    html_path: Path,
    csv_path: Path,
    source: str,
    title: str = "Image save report",
    invalid: Sequence[SkippedLine] = (),
) -> dict[str, Any]:
    """Write the page and the CSV; returns the totals."""
    table = frame(statuses, invalid)
    generated = datetime.now().astimezone().replace(microsecond=0).isoformat()
    write_atomic(csv_path, table.to_csv(index=False))
    write_atomic(html_path, render_html(table, title, generated, source))
    return totals(table)


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
    summary = write_report(statuses, args.html, args.csv, str(args.cache), invalid=invalid)
    print(
        f"{args.html}, {args.csv}: {summary['images']} images ({summary['ok']} saved, "
        f"{summary['failed']} failed, {summary['skipped']} skipped, "
        f"{summary['invalid']} invalid lines), "
        f"{human_size(summary['bytes'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
