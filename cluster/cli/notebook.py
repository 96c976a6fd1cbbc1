"""Small display helpers for the notebooks in ``notebooks/``: they call these, nothing more.

Everything renders without a GUI: charts are drawn on matplotlib's Agg canvas and shown
as PNG images, so the notebooks run the same in Jupyter, in ``nbclient`` and headless.
"""

from __future__ import annotations

import html
import io
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from cluster.config import Settings, load_settings
from cluster.cli.samples import write_samples

# Formats IPython.display.Image shows as they are; others are converted to PNG to be shown.
_SHOWN_AS_IS = {"webp": "webp", "jpeg": "jpeg", "png": "png", "gif": "gif"}


def settings() -> Settings:
    """The embedded defaults, in ``$MEDIAFARM_DATA_DIR`` or else a fresh temporary folder."""
    if os.environ.get("MEDIAFARM_DATA_DIR") or os.environ.get("MEDIAFARM_CONFIG"):
        return load_settings()
    folder = tempfile.mkdtemp(prefix="mediafarm-notebook-")
    return load_settings({**os.environ, "MEDIAFARM_DATA_DIR": folder})


def samples(settings_: Settings) -> list[str]:
    """The generated sample set under the data folder, written on first use only.

    Written once, the files keep their fingerprints, so ingesting them again redoes nothing.
    """
    folder = Path(settings_.data_dir) / "samples"
    marker = folder / ".complete"
    if not marker.exists():
        paths = write_samples(folder)
        marker.write_text("\n".join(p.name for p in paths))
    return [str(folder / name) for name in marker.read_text().splitlines()]


class Progress:
    """A progress line that updates in place: ``batch.wait(progress=Progress())``.

    Also takes the bulk path's calls (``farm.backfill(..., progress=Progress())``).
    """

    def __init__(self, label: str = "assets") -> None:
        from IPython.display import display

        self.label, self.started = label, time.monotonic()
        self.handle = display(self._render(0, None, Counter()), display_id=True)

    def __call__(self, done: int, total: int | None, counts: Counter) -> None:
        if self.handle is not None:
            self.handle.update(self._render(done, total, counts))

    def _render(self, done: int, total: int | None, counts: Counter):
        from IPython.display import HTML

        finished = total is not None and done >= total
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        if not summary:  # nothing settled in this run: all was done before, or it just began
            summary = "nothing to redo" if finished else "starting"
        rate = "" if not counts else \
            f" &middot; {sum(counts.values()) / max(time.monotonic() - self.started, 1e-9):.1f}/s"
        # With no total yet (a manifest still being read) there is no bar to draw, only counts.
        bar = "" if total is None else (
            f'<div style="background:#ddd;width:320px;height:6px">'
            f'<div style="background:#3a7;width:{100 * done / max(total, 1):.0f}%;height:6px">'
            f"</div></div>")
        return HTML(
            f'<div style="font-family:monospace">{done}/{total if total is not None else "?"} '
            f"{html.escape(self.label)} &middot; {html.escape(summary)}{rate}{bar}</div>")


def results_frame(results: Iterable[dict]):
    """One row per asset: source, status, reason and its renditions, as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([{
        "source": Path(r["source"]).name, "status": r["status"], "reason": r["reason"],
        "renditions": ", ".join(f"{x['preset']} {x['width']}x{x['height']} {x['format']} "
                                f"{x['bytes'] / 1024:.1f} KiB" for x in r["renditions"]),
    } for r in results])


def show_renditions(farm, results: Iterable[dict], presets: Iterable[str] | None = None) -> int:
    """Display each ready asset's image renditions inline, read from the renditions store.

    Returns how many images were shown.
    """
    from IPython.display import HTML, Image, display

    store = farm.stores["renditions"]
    wanted = set(presets) if presets is not None else None
    shown = 0
    for result in results:
        if result["status"] != "ready":
            continue
        display(HTML(f"<b>{html.escape(Path(result['source']).name)}</b>"))
        for rendition in result["renditions"]:
            media_type = rendition.get("media_type") or ""
            if not media_type.startswith("image/") or (wanted and rendition["preset"] not in wanted):
                continue
            data = store.get(rendition["sha256"])
            fmt = _SHOWN_AS_IS.get(rendition["format"])
            if fmt is None:
                data, fmt = _png(data), "png"
            display(HTML(f"{html.escape(rendition['preset'])}: {rendition['width']}x"
                         f"{rendition['height']} {rendition['format']}, "
                         f"{rendition['bytes'] / 1024:.1f} KiB"),
                    Image(data=data, format=fmt))
            shown += 1
    return shown


def _png(data: bytes) -> bytes:
    import pyvips

    from pipelines import vips  # noqa: F401  (hardened libvips)

    return pyvips.Image.new_from_buffer(data, "").pngsave_buffer()


def plan_frame(report: dict):
    """A re-encode plan (``farm.reencode(..., dry_run=True)``): renditions to make per kind."""
    import pandas as pd

    plan = report["plan"]
    rows = [{"kind": kind, "rendition": name, "to_make": count,
             "assets": plan["assets"].get(kind, 0)}
            for kind, renditions in plan["renditions"].items() for name, count in renditions.items()]
    return pd.DataFrame(rows, columns=["kind", "rendition", "to_make", "assets"])


def sample_frame(report: dict):
    """The sampled size and quality distributions of a re-encode, one row per preset."""
    import pandas as pd

    sample = report.get("sample") or {"presets": {}}
    rows = []
    for preset, found in sample["presets"].items():
        row = {"preset": preset, "formats": ", ".join(f"{k} {v}" for k, v in found["formats"].items())}
        for measure in ("bytes", "quality"):
            for stat, value in found[measure].items():
                row[f"{measure}_{stat}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def estimate_frame(report: dict):
    """The sample's estimate of the whole run: seconds and bytes for the image renditions."""
    import pandas as pd

    estimate = (report.get("sample") or {}).get("estimate", {})
    return pd.DataFrame([{"sampled": (report.get("sample") or {}).get("sampled", 0), **estimate}])


def export_frame(report: dict):
    """What an export wrote (``farm.export(url)``): rows, files and watermark per dataset."""
    import pandas as pd

    return pd.DataFrame([{"dataset": name, "rows": found["rows"], "files": len(found["files"]),
                          "watermark": found["watermark"]}
                         for name, found in report["datasets"].items()])


def bar_chart(table, x: str | list[str], y: str, *, title: str | None = None,
              ylabel: str | None = None, log: bool = False):
    """A horizontal bar chart of ``y`` by ``x`` (a column, or columns joined) as a PNG image.

    ``table`` is a ``pyarrow.Table`` or a pandas DataFrame, e.g. an analytics view.
    """
    from IPython.display import Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = table.to_pydict() if hasattr(table, "to_pydict") else table.to_dict("list")
    columns = [x] if isinstance(x, str) else list(x)
    labels = [" / ".join(str(v) for v in values) for values in zip(*(data[c] for c in columns))]
    values = [v or 0 for v in data[y]]
    figure = Figure(figsize=(7, max(1.6, 0.35 * len(labels) + 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(labels, values, color="#3a7")
    axes.invert_yaxis()
    axes.set_xlabel(ylabel or y)
    if log:
        axes.set_xscale("log")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return Image(data=buffer.getvalue(), format="png")


__all__ = ["Progress", "bar_chart", "estimate_frame", "export_frame", "plan_frame", "results_frame",
           "sample_frame", "samples", "settings", "show_renditions"]


# -- the library notebook (04_library) ---------------------------------------------------------


def library_samples(settings_: Settings, sources: int = 3, unrelated: int = 3) -> list[str]:
    """A small library under the data folder, written on first use only: ``sources``
    pictures each with the copies people's libraries hold (half the size, re-encoded at
    JPEG quality 60, saved again as WebP), and ``unrelated`` pictures of their own."""
    from cluster.cli.samples import scene

    folder = Path(settings_.data_dir) / "library"
    marker = folder / ".complete"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        # Seeds of their own: the quickstart's photos (seeds 0-9) are other pictures, not copies.
        seed = 20
        for number in range(1, sources + 1):
            picture = scene(1600, 1200, seed + number)
            copies = {f"trip-{number}.jpg": picture.jpegsave_buffer(Q=90),
                      f"trip-{number}-small.jpg": picture.resize(0.5).jpegsave_buffer(Q=85),
                      f"trip-{number}-q60.jpg": picture.jpegsave_buffer(Q=60),
                      f"trip-{number}-shared.webp": picture.webpsave_buffer(Q=75)}
            for name, data in copies.items():
                (folder / name).write_bytes(data)
                names.append(name)
        for number in range(sources + 1, sources + unrelated + 1):
            name = f"other-{number}.jpg"
            scene(1200, 900, seed + number).jpegsave(str(folder / name), Q=88)
            names.append(name)
        marker.write_text("\n".join(names))
    return [str(folder / name) for name in marker.read_text().splitlines()]


def ids(page) -> list[str]:
    """The asset ids of a search page (``Farm.search``), in its order."""
    return [item["id"] for item in page.items]


def search_frame(page):
    """A search page as a pandas DataFrame: name, kind, size, capture time, camera, tags."""
    import pandas as pd

    return pd.DataFrame([{
        "name": Path(item["source_uri"]).name, "status": item["status"], "kind": item["kind"],
        "pixels": f"{item['width']}x{item['height']}" if item["width"] else None,
        "bytes": item["size"], "camera": item["camera_model"], "tags": ", ".join(item["tags"]),
    } for item in page.items])


def show_groups(farm, groups: list[dict], preset: str = "thumb") -> int:
    """Each near-duplicate group (``Farm.near_duplicates``) as one row of its assets'
    ``preset`` renditions, each captioned with its file name; returns how many were shown."""
    import base64

    from IPython.display import HTML, display

    store = farm.stores["renditions"]
    shown = 0
    for number, group in enumerate(groups, 1):
        cells = []
        for result in farm.results([a["asset_id"] for a in group["assets"]]):
            rendition = next((r for r in result["renditions"] if r["preset"] == preset), None)
            if rendition is None:
                continue
            data = base64.b64encode(store.get(rendition["sha256"])).decode()
            cells.append(
                f'<figure style="margin:4px"><img src="data:{rendition["media_type"]};base64,'
                f'{data}"><figcaption style="font:11px monospace">'
                f'{html.escape(Path(result["source"]).name)}</figcaption></figure>')
            shown += 1
        display(HTML(f"<b>group {number}</b> &middot; {len(group['assets'])} assets"
                     f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'))
    return shown
