"""Digest -> a small PNG: the top statements' total time, and before/after the deploy in a hold-back.

matplotlib's object API with the Agg canvas, never pyplot: no global figure
state, no GUI backend, safe to call from the executor's threads. Bars are
labelled with ``StatementRow.name`` (verb, first table, a fingerprint), which
holds keywords and identifiers only — never a parameter value.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bot.workflow.digest import DeployRow, Digest, StatementRow

WIDTH_PX = 900
HEIGHT_PX = 500  # the top statements alone
HEIGHT_DEPLOY_PX = 800  # with the since-the-deploy panel below them
DPI = 100
_BAR = "#4C72B0"
_BEFORE = "#B0B0B0"
_AFTER = "#4C72B0"
_SLOWER = "#C44E52"


def png(d: Digest) -> bytes:
    """The chart as PNG bytes: WIDTH_PX x HEIGHT_PX, or HEIGHT_DEPLOY_PX tall with a since-the-deploy panel."""
    deploy_rows = d.since_deploy.rows if d.since_deploy is not None else ()
    panels = 2 if deploy_rows else 1
    height = HEIGHT_DEPLOY_PX if deploy_rows else HEIGHT_PX
    fig = Figure(figsize=(WIDTH_PX / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    _top(axes[0], d)
    if deploy_rows:
        _deploy(axes[1], d, deploy_rows)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def _plain(label: str) -> str:
    """No mathtext: a ``$`` (legal in identifiers) stays a dollar sign."""
    return label.replace("$", r"\$")


def _unit(values: list[float]) -> tuple[float, str]:
    peak = max(values, default=0.0)
    if peak >= 120_000:
        return 60_000.0, "min"
    if peak >= 2_000:
        return 1000.0, "s"
    return 1.0, "ms"


def _top(ax, d: Digest) -> None:
    rows: tuple[StatementRow, ...] = d.top
    basis = "since the last reset" if d.period.cumulative else "in the period"
    ax.set_title(_plain(f"{d.source}: top {len(rows)} statements by total time {basis}"), fontsize=11, loc="left")
    if not rows:
        ax.text(0.5, 0.5, "No statement ran in the period", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    scale, unit = _unit([r.total_ms for r in rows])
    ys = list(range(len(rows)))[::-1]  # the biggest on top
    ax.barh(ys, [r.total_ms / scale for r in rows], color=_BAR, height=0.6)
    ax.set_yticks(ys, [_plain(r.name) for r in rows], fontsize=8)
    ax.set_xlabel(f"total time ({unit})", fontsize=9)
    for y, r in zip(ys, rows):
        ax.annotate(f" {r.share * 100:.1f}%", (r.total_ms / scale, y), va="center", fontsize=7)
    ax.margins(x=0.12)
    ax.tick_params(axis="x", labelsize=8)


def _deploy(ax, d: Digest, rows: tuple[DeployRow, ...]) -> None:
    s = d.since_deploy
    assert s is not None
    ax.set_title(_plain(f"mean per call before / after deploy {s.run_id} (day {s.day} of {s.hold_days})"),
                 fontsize=11, loc="left")
    scale, unit = _unit([max(r.after_mean_ms, r.before_mean_ms or 0.0) for r in rows])
    ys = [float(i) for i in range(len(rows))][::-1]
    before = [(r.before_mean_ms or 0.0) / scale for r in rows]
    after = [r.after_mean_ms / scale for r in rows]
    ax.barh([y + 0.2 for y in ys], before, height=0.38, color=_BEFORE)
    ax.barh([y - 0.2 for y in ys], after, height=0.38, color=[_SLOWER if r.regressed else _AFTER for r in rows])
    ax.set_yticks(ys, [_plain(r.name) for r in rows], fontsize=8)
    ax.set_xlabel(f"mean time per call ({unit})", fontsize=9)
    for y, r in zip(ys, rows):
        tag = "new" if r.change_pct is None else f"{r.change_pct:+.0f}%"
        ax.annotate(f" {tag}", (r.after_mean_ms / scale, y - 0.2), va="center", fontsize=7)
    ax.legend(handles=[Patch(color=_BEFORE, label="before"), Patch(color=_AFTER, label="after"),
                       Patch(color=_SLOWER, label="after, slower")], fontsize=8, loc="lower right")
    ax.margins(x=0.12)
    ax.tick_params(axis="x", labelsize=8)
