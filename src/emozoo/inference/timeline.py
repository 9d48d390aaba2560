"""Each video track over time: its duration, dominant expression and each label's share (``emozoo predict --summary``),
and a plot of its scores (``--plot``)."""
from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path

from .._plot import pyplot
from .results import Prediction


class Timeline:
    """Collects, per track of each video, its first and last frame and time, its frame count and how often each label
    was its label: memory grows with the number of tracks, not with the length of the video. With ``series=True`` it
    also keeps each frame's time and scores (for :meth:`plot`; 4 bytes per label and frame)."""

    def __init__(self, labels, series: bool = False):
        self.labels, self.series = list(labels), series
        self.tracks: dict[tuple[str, int], dict] = {}

    def add(self, pred: Prediction) -> None:
        """Count the tracked faces of one video frame."""
        if pred.frame is None:
            return
        when = pred.time if pred.time is not None else float(pred.frame)
        for face in pred.faces:
            if face.track is None:
                continue
            t = self.tracks.get((pred.source, face.track))
            if t is None:
                t = self.tracks[(pred.source, face.track)] = {"start": when, "first": pred.frame, "frames": 0,
                                                              "labels": Counter(), "times": array("d"), "scores": array("f")}
            t["end"], t["last"], t["frames"] = when, pred.frame, t["frames"] + 1
            t["labels"][face.label] += 1
            if self.series:
                t["times"].append(when)
                t["scores"].extend(face.scores[n] for n in self.labels)

    def summary(self) -> list[dict]:
        """Per track: ``source``, ``track``, ``start`` and ``end`` (seconds; frame numbers when the video has no frame
        rate), ``duration`` (end - start), ``first_frame``, ``last_frame``, ``frames``, ``dominant`` (its most frequent
        label) and ``shares`` (each label's share of its frames, most frequent first)."""
        out = []
        for (source, track), t in self.tracks.items():
            shares = {k: round(v / t["frames"], 4) for k, v in t["labels"].most_common()}
            out.append({"source": source, "track": track, "start": round(t["start"], 3), "end": round(t["end"], 3),
                        "duration": round(t["end"] - t["start"], 3), "first_frame": t["first"], "last_frame": t["last"],
                        "frames": t["frames"], "dominant": next(iter(shares)), "shares": shares})
        return out

    def lines(self) -> list[str]:
        """:meth:`summary` as text, one line per track."""
        return [f"{s['source']} track {s['track']}: {s['duration']:.1f} s ({s['frames']} frames from {s['start']:.1f} s), "
                f"mostly {s['dominant']}; " + ", ".join(f"{k} {v:.0%}" for k, v in s["shares"].items())
                for s in self.summary()]

    def plot(self, path: str | Path) -> Path:
        """Draw each track's label scores over time, one panel per track, into an image file (needs matplotlib)."""
        plt = pyplot()
        import numpy as np

        items = list(self.tracks.items())
        fig, axes = plt.subplots(max(1, len(items)), 1, figsize=(10, 1.8 + 1.6 * max(1, len(items))), squeeze=False,
                                 sharex=True)
        for ax, ((source, track), t) in zip(axes[:, 0], items):
            scores = np.frombuffer(t["scores"], np.float32).reshape(-1, len(self.labels))
            for j, name in enumerate(self.labels):
                ax.plot(np.frombuffer(t["times"]), scores[:, j], label=name, lw=1)
            ax.set_ylim(-0.03, 1.03)  # a score of exactly 0 or 1 would hide under the frame
            ax.set_ylabel("score")
            ax.set_title(f"{Path(source).name} track {track}: mostly {t['labels'].most_common(1)[0][0]}", fontsize=9)
        if not items:
            axes[0, 0].text(0.5, 0.5, "no tracked face", ha="center", va="center")
        axes[-1, 0].set_xlabel("seconds")
        axes[0, 0].legend(ncol=min(8, len(self.labels)), fontsize=7, loc="upper right")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
