"""What a search shows a reader (:mod:`keras_rnnlm.tune`): its trials as a table
(``trials.csv``, and printed at its end) and a plot of validation perplexity against the
settings that explain most of its spread (``trials.png``).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from keras_rnnlm.files import write_atomically, written_atomically
from keras_rnnlm.search_space import Dimension


def write_table(rows: list[dict], columns: list[str], path: Path) -> None:
    """The trials as a CSV file, one row a trial."""
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def plot_trials(rows: list[dict], space: tuple[Dimension, ...], path: Path, panels: int = 4) -> None:
    """Validation perplexity against the searched settings that mattered most: those whose
    values explain most of the trials' spread in log perplexity (the correlation's square
    for an interval, the share of variance between choices for a list)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot

    ranked = sorted(space, key=lambda dimension: -influence(rows, dimension))[:panels]
    figure, axes = pyplot.subplots(1, len(ranked), figsize=(4 * len(ranked), 3.6), squeeze=False)
    best = min(rows, key=lambda row: row["val_loss"])
    for axis, dimension in zip(axes[0], ranked):
        if dimension.choices:
            labels = [str(choice) for choice in dimension.choices]
            xs = [labels.index(str(row[dimension.key])) for row in rows]
            axis.set_xticks(range(len(labels)), labels)
        else:
            xs = [row[dimension.key] for row in rows]
            if dimension.log:
                axis.set_xscale("log")
        axis.scatter(xs, [row["val_perplexity"] for row in rows], color="tab:blue")
        best_x = xs[rows.index(best)]
        axis.scatter([best_x], [best["val_perplexity"]], color="tab:red", label=f"best (trial {best['trial']})")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log axes: major ticks only
        axis.set_xlabel(f"{dimension.key} (explains {influence(rows, dimension):.0%})")
        axis.set_ylabel("validation perplexity")
        axis.legend()
    figure.suptitle(f"{len(rows)} trials (those stopped at the deadline left out)")
    figure.tight_layout()
    with written_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)


def influence(rows: list[dict], dimension: Dimension) -> float:
    """The share of the spread in log perplexity that ``dimension``'s values explain."""
    losses = [row["val_loss"] for row in rows]
    mean = sum(losses) / len(losses)
    total = sum((loss - mean) ** 2 for loss in losses)
    if total == 0:
        return 0.0
    if dimension.choices:
        groups: dict[str, list[float]] = {}
        for row, loss in zip(rows, losses):
            groups.setdefault(str(row[dimension.key]), []).append(loss)
        between = sum(len(group) * (sum(group) / len(group) - mean) ** 2 for group in groups.values())
        return between / total
    xs = [math.log(row[dimension.key]) if dimension.log else float(row[dimension.key]) for row in rows]
    x_mean = sum(xs) / len(xs)
    spread = sum((x - x_mean) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    covariance = sum((x - x_mean) * (loss - mean) for x, loss in zip(xs, losses))
    return covariance**2 / (spread * total)


def format_table(rows: list[dict], columns: list[str]) -> str:
    cells = [[shown(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def shown(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)
