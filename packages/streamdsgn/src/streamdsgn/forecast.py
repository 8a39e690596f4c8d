"""A Kalman-filter forecaster of detections: the streaming baseline of Li et al. ("Towards Streaming Perception",
ECCV 2020), which associates a non-streaming detector's boxes over time and extrapolates them to the query time.

Per class, tracks carry a constant-velocity Kalman filter on the BEV centre ``(x, y, v_x, v_y)`` (relative to the
moving ego; at constant ego speed relative motion is constant too); size, height and yaw are taken from the last
associated detection. Association: detections in decreasing score order each take the nearest live track of their
class whose predicted centre lies within ``gate`` metres (greedy, as Li et al.'s IoU-greedy association but on
centres: at 100–300 ms the boxes of fast objects no longer overlap their previous position). Unmatched detections
start tracks with zero velocity (and a large velocity variance); tracks missed ``max_missed`` updates in a row are
dropped. :meth:`KalmanBoxForecaster.predict` returns the boxes of the tracks updated at the last frame, moved to any
later time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KalmanBoxForecaster"]


class KalmanBoxForecaster:
    """Constant-velocity Kalman tracker / forecaster of LiDAR-style boxes ``(x, y, z, dx, dy, dz, yaw)``.

    Args:
        accel_std: process noise, the standard deviation of an unmodelled acceleration (m/s²).
        meas_std: measurement noise of a detected centre (m).
        init_vel_std: standard deviation of a new track's velocity (m/s).
        gate: association radius per class index (m).
        max_missed: updates a track survives without a detection.
    """

    def __init__(self, accel_std: float = 3.0, meas_std: float = 0.3, init_vel_std: float = 10.0,
                 gate: tuple = (3.0, 1.5, 2.0), max_missed: int = 1):
        if accel_std < 0 or meas_std <= 0 or init_vel_std <= 0 or max_missed < 0:
            raise ValueError("need accel_std >= 0, meas_std > 0, init_vel_std > 0 and max_missed >= 0")
        self.q, self.r, self.v0 = float(accel_std), float(meas_std), float(init_vel_std)
        self.gate, self.max_missed = tuple(float(g) for g in gate), int(max_missed)
        self.reset()

    def reset(self) -> None:
        self.t: float | None = None
        self.x = np.zeros((0, 4))          # state (x, y, vx, vy)
        self.p = np.zeros((0, 4, 4))       # covariance
        self.box = np.zeros((0, 7))        # last detection box
        self.score = np.zeros(0)
        self.label = np.zeros(0, np.int64)
        self.missed = np.zeros(0, np.int64)

    @staticmethod
    def _f(dt: float) -> np.ndarray:
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt
        return f

    def _q(self, dt: float) -> np.ndarray:
        g = np.array([[dt * dt / 2, 0], [0, dt * dt / 2], [dt, 0], [0, dt]])
        return g @ g.T * self.q ** 2

    def update(self, t: float, det: dict) -> None:
        """Advance the tracks to time ``t`` (seconds) and associate the detections ``{"boxes" [K, 7], "scores",
        "labels"}`` of the frame taken at ``t``."""
        boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 7)
        scores = np.asarray(det["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(det["labels"], dtype=np.int64).reshape(-1)
        if self.t is not None and len(self.x):
            dt = max(0.0, t - self.t)
            f = self._f(dt)
            self.x = self.x @ f.T
            self.p = f[None] @ self.p @ f.T[None] + self._q(dt)[None]
        self.t = t
        n = len(self.x)
        used = np.zeros(n, dtype=bool)
        hmat = np.eye(2, 4)
        new_x, new_p, new_box, new_score, new_label = [], [], [], [], []
        for k in np.argsort(-scores, kind="stable"):
            c = labels[k]
            cand = np.nonzero(~used & (self.label == c))[0] if n else np.zeros(0, np.int64)
            j = -1
            if len(cand):
                d = np.hypot(self.x[cand, 0] - boxes[k, 0], self.x[cand, 1] - boxes[k, 1])
                m = int(np.argmin(d))
                if d[m] <= self.gate[min(int(c), len(self.gate) - 1)]:
                    j = int(cand[m])
            if j >= 0:
                used[j] = True
                s = hmat @ self.p[j] @ hmat.T + np.eye(2) * self.r ** 2
                gain = self.p[j] @ hmat.T @ np.linalg.inv(s)
                self.x[j] = self.x[j] + gain @ (boxes[k, :2] - self.x[j, :2])
                self.p[j] = (np.eye(4) - gain @ hmat) @ self.p[j]
                self.box[j], self.score[j], self.missed[j] = boxes[k], scores[k], 0
            else:
                new_x.append(np.array([boxes[k, 0], boxes[k, 1], 0.0, 0.0]))
                new_p.append(np.diag([self.r ** 2, self.r ** 2, self.v0 ** 2, self.v0 ** 2]))
                new_box.append(boxes[k])
                new_score.append(scores[k])
                new_label.append(c)
        self.missed[~used] += 1
        keep = self.missed <= self.max_missed
        self.x, self.p, self.box = self.x[keep], self.p[keep], self.box[keep]
        self.score, self.label, self.missed = self.score[keep], self.label[keep], self.missed[keep]
        if new_x:
            self.x = np.concatenate([self.x, np.stack(new_x)])
            self.p = np.concatenate([self.p, np.stack(new_p)])
            self.box = np.concatenate([self.box, np.stack(new_box)])
            self.score = np.concatenate([self.score, np.asarray(new_score)])
            self.label = np.concatenate([self.label, np.asarray(new_label, dtype=np.int64)])
            self.missed = np.concatenate([self.missed, np.zeros(len(new_x), np.int64)])

    def state(self) -> dict:
        """A copy of the tracks updated at the last frame (what :meth:`predict` extrapolates)."""
        live = self.missed == 0
        return {"t": self.t, "x": self.x[live].copy(), "box": self.box[live].copy(), "score": self.score[live].copy(),
                "label": self.label[live].copy()}

    @staticmethod
    def predict_state(state: dict, t: float) -> dict:
        """Boxes of a :meth:`state` moved to time ``t``: ``{"boxes", "scores", "labels"}`` (numpy)."""
        dt = 0.0 if state["t"] is None else max(0.0, t - state["t"])
        boxes = state["box"].copy()
        if len(boxes):
            boxes[:, :2] = state["x"][:, :2] + dt * state["x"][:, 2:4]
        return {"boxes": boxes.astype(np.float32), "scores": state["score"].astype(np.float32),
                "labels": state["label"].astype(np.int64)}

    def predict(self, t: float) -> dict:
        """The tracks updated at the last frame, extrapolated to time ``t``."""
        return self.predict_state(self.state(), t)
