"""Does the captioner say what varies inside a class? The body colour in a run's test captions (issue 25).

The default data's class is fixed by head colour, wing colour and wing pattern; the body colour varies
inside a class, and half the references state it. Reads `<run>/test_predictions.csv` (written by the
`test_predictions` callback, `+callbacks.test_predictions._target_=` its class in
jointcap/runtime/callbacks/predictions.py, `+callbacks.test_predictions.dirpath=<run>`) and prints the
share of captions that state a body colour and the share of those that state the true one, plus distinct captions.

    python experiments/body_colour.py <run folder or predictions CSV>… [data overrides, default data=synthetic]

A CSV argument is any file with `index` and `caption` columns: a run's test_predictions.csv or the
predictions.csv that `python -m jointcap.evaluate` writes (its decoding options, e.g. greedy or beam 3).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import jointcap.config  # noqa: F401  (registers the schema configs that conf/ builds on)
from jointcap.metrics.correctness import FactReader
from jointcap.metrics.text import tokenize

CONF = Path(__file__).resolve().parents[1] / "conf"


def body_colour(captions: dict[int, str], truth: list[str], reader: FactReader) -> dict[str, float]:
    """captions: test index → caption; truth: the test split's body colours. Shares in %."""
    stated = right = 0
    for i, cap in captions.items():
        said = {f.split(" ", 1)[1] for f in reader.read(tokenize(cap)) if f.startswith("body ")}
        colours = {a for a in said if reader.attribute_kinds.get(a, "colour") == "colour"}
        if colours:
            stated += 1
            right += truth[i] in colours and len(colours) == 1
    n = len(captions)
    return {
        "body colour stated %": 100 * stated / n,
        "right when stated %": 100 * right / stated if stated else float("nan"),
        "distinct captions %": 100 * len(set(captions.values())) / n,
    }


def test_truth(overrides: list[str]) -> tuple[list[str], FactReader]:
    """The test split's body colours and the data's fact reader (data=synthetic unless overridden)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("test")
    reader = FactReader.from_info(dm.info)
    if reader is None:
        raise SystemExit("this data set names no parts/attributes: no body colour to read")
    return list(dm.splits["test"].extra["attributes"]["body"]), reader


def main(argv: list[str]) -> None:
    runs = [Path(a) for a in argv if "=" not in a]
    truth, reader = test_truth([a for a in argv if "=" in a])
    for run in runs:
        with (run if run.is_file() else run / "test_predictions.csv").open() as f:
            caps = {int(r["index"]): r["caption"] for r in csv.DictReader(f)}
        s = body_colour(caps, truth, reader)
        print(f"{run}: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
