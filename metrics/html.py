"""One self-contained HTML page: the optimizer's summary, the report tables and the Pareto plot
embedded as base64 (no external files, scripts or styles: it opens anywhere and can be mailed)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from metrics.report_tables import TITLES

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328;max-width:1200px}
table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}
tr.flag td{background:#ffebe9}pre{background:#f6f8fa;padding:1em;font-size:12px}h2{font-size:16px}"""


def write_html(report, path: str | Path, png: Path | None = None) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tierwise report</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>tierwise report: {html.escape(str(report.meta.get('task') or report.source))}</h1>",
             f"<p>source: {html.escape(report.source)} ({report.kind})</p>"]
    if report.summary:
        from optimizers.summary import render_text

        parts.append(f"<h2>Optimizer summary</h2><pre>{html.escape(render_text(report.summary))}</pre>")
    if png is not None:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        parts.append(f"<h2>Pareto plot</h2><img alt='quality vs cost per 1k' src='data:image/png;base64,{data}'>")
    for name, table in report.tables.items():
        if table.empty:
            continue
        parts.append(f"<h2>{html.escape(TITLES.get(name, name))}</h2>")
        rendered = table.to_html(index=False, float_format=lambda x: f"{x:.6g}", na_rep="", border=0)
        if name == "segments":  # highlight flagged segments
            for segment in table.loc[table["flag"], "segment"]:
                rendered = rendered.replace(f"<tr>\n      <td>{html.escape(str(segment))}</td>",
                                            f"<tr class='flag'>\n      <td>{html.escape(str(segment))}</td>")
        parts.append(rendered)
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts))
    return path
