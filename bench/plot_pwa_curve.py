"""Draw the PWA weight curve w(p) of semires.train.refine.pwa_weights (docs/images/pwa_curve.png).

.venv/bin/python bench/plot_pwa_curve.py [--out docs/images/pwa_curve.png]
"""

from __future__ import annotations

import argparse
import io

import matplotlib
import torch

from semires.train.refine import pwa_weights
from semires.utils.io import atomic_write_bytes

MARKED = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)  # the values docs/method.md section 4 quotes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images/pwa_curve.png")
    args = parser.parse_args()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = torch.linspace(0, 1, 401, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for sigma2, style in ((0.1, "-"), (0.2, "--")):
        label = f"s = {sigma2}" + (" (default)" if sigma2 == 0.1 else "")
        ax.plot(p, pwa_weights(p, sigma2=sigma2), style, label=label)
    marks = torch.tensor(MARKED, dtype=torch.float64)
    ax.plot(marks, pwa_weights(marks), "o", color="C0")
    for x, y in zip(marks.tolist(), pwa_weights(marks).tolist(), strict=True):
        ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xlabel("teacher foreground probability p(x)")
    ax.set_ylabel("loss weight w(x)")
    ax.set_title("PWA: w = 1.3 - exp(-(p - 0.5)² / 2s) / √(2πs)")
    ax.set_ylim(0, 1.1)
    ax.legend(loc="upper center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
