"""`facemoment report`: a trace as a timeline picture (PNG) or a page (HTML) with the summary tables."""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from facemoment.tools.report_figure import build_figure
from facemoment.tools.timeline import read_timeline
from facemoment.tools.trace_reader import TraceFileError, number
from facemoment.tools.trace_summary import read_line, summary_tables

OUTPUT_SUFFIXES = (".png", ".html", ".htm")


def figure_png(fig: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def html_page(path: str | Path, summary: Dict[str, Any], png: bytes) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>FaceMoment report: {html.escape(Path(path).name)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}"
        "table{border-collapse:collapse;margin:0.3em 0 1em}"
        "th,td{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
        ".note{color:#666;font-size:12px}</style></head><body>",
        f"<h1>FaceMoment report: {html.escape(str(path))}</h1>",
        f"<p>{html.escape(read_line(summary))}</p>",
        f'<img alt="timeline of {html.escape(Path(path).name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">',
    ]
    for table in summary_tables(summary):
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        if not table.rows:
            parts.append("<p>none</p>")
            continue
        parts.append('<table class="summary"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
        for row in table.rows:
            cells = "".join(
                f'<td class="num">{_html_value(v)}</td>' if number(v) is not None else f"<td>{_html_value(v)}</td>"
                for v in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
        if table.note:
            parts.append(f'<p class="note">{html.escape(table.note)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def write_report(trace: str | Path, output: str | Path, stream: Optional[str] = None, dpi: int = 100) -> Dict[str, Any]:
    """Write the timeline as PNG, or as an HTML page with the summary tables; returns the summary.

    Raises TraceFileError for an unreadable trace and ValueError for an unknown output suffix.
    """
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{out}: the output must end in .png or .html")
    timeline, summary = read_timeline(trace, stream)
    png = figure_png(build_figure(timeline, summary, trace), dpi)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        out.write_bytes(png)
    else:
        out.write_text(html_page(trace, summary, png), encoding="utf-8")
    return summary


def cmd_report(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.trace).with_name("report.png")
    try:
        summary = write_report(args.trace, output, stream=args.stream, dpi=args.dpi)
    except (TraceFileError, ValueError) as exc:
        print(f"facemoment report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"facemoment report: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{output}  ({read_line(summary)})")
    return 0


def add_report_args(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Register `report` on a CLI's sub-command parsers."""
    p = subparsers.add_parser(
        "report",
        help="a timeline plot (PNG) or page (HTML) of a trace",
        description="Plot a trace.jsonl as a timeline: candidate scores, gate, triggers with their clip "
        "windows, drops, sync delays and processing time. .html embeds the plot and the trace summary.",
    )
    p.add_argument("trace", help="a trace.jsonl file")
    p.add_argument("-o", "--output", help="report.png or report.html (default: report.png next to the trace)")
    p.add_argument("--stream", help="plot only this stream id (the summary tables cover the whole file)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of the plot (default 100)")
    p.set_defaults(func=cmd_report)
    return p
