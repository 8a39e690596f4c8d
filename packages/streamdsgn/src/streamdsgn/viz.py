"""Bird's-eye-view plots of detections vs ground truth (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["box_corners", "plot_bev"]

_COLORS = {0: "tab:red", 1: "tab:blue", 2: "tab:orange"}


def box_corners(box) -> np.ndarray:
    """BEV corners ``[5, 2]`` (closed polygon) of ``(x, y, z, dx, dy, dz, yaw)`` plus nothing else."""
    x, y, _, dx, dy, _, yaw = [float(v) for v in box]
    local = np.array([[dx, dy], [-dx, dy], [-dx, -dy], [dx, -dy], [dx, dy]]) / 2
    c, s = np.cos(yaw), np.sin(yaw)
    return local @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def plot_bev(path, panels: list[dict], point_cloud_range: tuple, title: str = "", min_score: float = 0.0) -> Path:
    """One subplot per panel ``{"title", "gt": {"boxes","labels"}, "det": {"boxes","scores","labels"}}``: ground truth
    as filled grey outlines, detections as coloured outlines (colour = class, line width = score), the ego at the
    origin, x (forward) up and y (left) to the left, restricted to ``point_cloud_range``; detections scoring below
    ``min_score`` are not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError("plot_bev needs matplotlib: pip install 'streamdsgn[plot]'") from err
    pcr = point_cloud_range
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for b in np.asarray(panel["gt"]["boxes"]).reshape(-1, 7):
            c = box_corners(b)
            ax.fill(-c[:, 1], c[:, 0], color="0.75", alpha=0.6, lw=0)
            ax.plot(-c[:, 1], c[:, 0], color="0.3", lw=1.0)
        det = panel.get("det") or {}
        for b, s, lab in zip(np.asarray(det.get("boxes", np.zeros((0, 7)))).reshape(-1, 7),
                             np.asarray(det.get("scores", [])), np.asarray(det.get("labels", []))):
            if float(s) < min_score:
                continue
            c = box_corners(b)
            ax.plot(-c[:, 1], c[:, 0], color=_COLORS.get(int(lab), "k"), lw=0.5 + 2.0 * float(s))
        ax.plot([0], [0], marker="^", color="k")
        ax.set_xlim(-pcr[4], -pcr[1])
        ax.set_ylim(0, pcr[3])
        ax.set_aspect("equal")
        ax.set_title(panel.get("title", ""), fontsize=8)
        ax.set_xlabel("−y (m, right)", fontsize=7)
        ax.set_ylabel("x (m, forward)", fontsize=7)
        ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
