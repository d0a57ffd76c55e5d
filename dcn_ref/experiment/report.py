"""The experiment's results: a printed table, ``results.json`` and ``results.md``.

With several seeds an arm's accuracy is shown as mean ± standard deviation over the seeds
(the sample standard deviation, n - 1 in the denominator); every seed's numbers are in
``results.json``. The differences between arms are taken seed by seed (each seed's arms
start from that seed's cnn and see the same images): every fine-tuned arm minus the control
``cnn_scaled``, and every deformable arm minus the matched control of its parameter count.
"""
import json
import math
from pathlib import Path

from ..atomic import atomic_file
from .stages import ARMS, CONTROLS

#: a matched control pairs with an arm whose parameter count is within this share of its own
MATCH_TOLERANCE = 0.02

KERAS = {  # the Keras experiment's numbers (60,000 training digits), for comparison
    "cnn": (0.9884, 0.577), "deform_offset": (0.9016, 0.9323),
}
METRICS = ("test_accuracy_normal", "test_accuracy_scaled", "train_seconds", "forward_ms_batch32")


def _mean_std(values):
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summary(results):
    """One record per arm (in the order of ``ARMS``): its seeds, and the mean and standard
    deviation (None for one seed) of every metric over them."""
    rows = []
    for name in ARMS:
        runs = [r for r in results if r["name"] == name]
        if not runs:
            continue
        row = {"name": name, "seeds": [r["seed"] for r in runs], "params": runs[0]["params"]}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r[metric] for r in runs])
        rows.append(row)
    return rows


def _accuracy(row, metric):
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def table(results):
    """The results as a Markdown table: one row per arm, accuracies as mean ± std over seeds."""
    lines = ["| model | params | seeds | train s | forward ms (batch 32) | accuracy normal | "
             "accuracy scaled |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in summary(results):
        lines.append(f"| {row['name']} | {row['params']:,} | {len(row['seeds'])} | "
                     f"{row['train_seconds_mean']:.0f} | {row['forward_ms_batch32_mean']:.1f} | "
                     f"{_accuracy(row, 'test_accuracy_normal')} | "
                     f"{_accuracy(row, 'test_accuracy_scaled')} |")
    return "\n".join(lines)


def _matched_control(arm, params):
    """The matched control (of ``params``: name -> count) within MATCH_TOLERANCE of
    ``arm``'s count, the nearest if several; None if none ran."""
    near = [(abs(params[c] - params[arm]), c) for c in CONTROLS[1:] if c in params
            and abs(params[c] - params[arm]) <= MATCH_TOLERANCE * params[arm]]
    return min(near)[1] if near else None


def pairs(results):
    """(arm, control) pairs to compare, in table order: every fine-tuned arm but the control
    against ``cnn_scaled``, then every deformable arm against its matched control."""
    params = {r["name"]: r["params"] for r in results}
    names = [name for name in ARMS if name in params]
    found = []
    if "cnn_scaled" in params:
        found += [(name, "cnn_scaled") for name in names if name not in ("cnn", "cnn_scaled")]
    for name in names:
        control = _matched_control(name, params) if name.startswith("deform_") else None
        if control is not None:
            found.append((name, control))
    return found


def differences(results):
    """Per seed, each pair of ``pairs``: {"arm", "control", "seed", "normal", "scaled"},
    the arm's test accuracies minus the control's, for every seed both ran."""
    by_key = {(r["name"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    rows = []
    for arm, control in pairs(results):
        for seed in seeds:
            if (arm, seed) in by_key and (control, seed) in by_key:
                a, c = by_key[arm, seed], by_key[control, seed]
                rows.append({"arm": arm, "control": control, "seed": seed,
                             "normal": a["test_accuracy_normal"] - c["test_accuracy_normal"],
                             "scaled": a["test_accuracy_scaled"] - c["test_accuracy_scaled"]})
    return rows


def differences_table(results):
    """``differences`` as a Markdown table: a row per pair, a column per seed and the mean,
    each cell "normal / scaled"; None when there is nothing to compare."""
    rows = differences(results)
    if not rows:
        return None
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| arm | minus | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "| --- | --- |" + " ---: |" * (len(seeds) + 1)]
    for arm, control in pairs(results):
        mine = {r["seed"]: r for r in rows if r["arm"] == arm and r["control"] == control}
        if not mine:
            continue
        cells = [f"{mine[s]['normal']:+.4f} / {mine[s]['scaled']:+.4f}" if s in mine else ""
                 for s in seeds]
        mean = [sum(r[k] for r in mine.values()) / len(mine) for k in ("normal", "scaled")]
        lines.append(f"| {arm} | {control} | " + " | ".join(cells)
                     + f" | {mean[0]:+.4f} / {mean[1]:+.4f} |")
    return "\n".join(lines)


def _epochs(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _write_atomically(path, text):
    with atomic_file(path, "w") as f:
        f.write(text)


def duration(seconds, resumed):
    """How long the run took, or, when it resumed from checkpoints, its last invocation."""
    if resumed:
        return f"{seconds / 60:.1f} minutes in the invocation that resumed it from checkpoints"
    return f"{seconds / 60:.1f} minutes"


def write(out, config, results, histories, data_description, command, seconds, resumed=False):
    """Write results.json and results.md into ``out``."""
    out = Path(out)
    payload = {"config": config.as_dict(), "data": data_description, "command": command,
               "seconds": seconds, "resumed": resumed, "models": results,
               "summary": summary(results), "differences": differences(results),
               "history": histories}
    _write_atomically(out / "results.json", json.dumps(payload, indent=2) + "\n")
    keras = "\n".join(f"- {name}: normal {n:.4f}, scaled {s:.4f}" for name, (n, s) in KERAS.items())
    names = [row["name"] for row in summary(results)]
    arms = "\n".join(f"- {name}: {ARMS[name].description}" for name in names)
    deform = [n for n in names if n.startswith("deform_")]
    compared = differences_table(results)
    if compared is not None:
        compared = f"""
Each seed, each arm minus its controls (accuracy normal / scaled; the arms of a seed are all
fine-tuned from that seed's cnn, on the same images in the same order): every fine-tuned
arm minus the control `cnn_scaled`, and every deformable arm minus the matched control of
its parameter count (within {MATCH_TOLERANCE:.0%}), when those ran:

{compared}
"""
    else:
        compared = ""
    sampling = "".join(f", `sampling_{n}.png`" for n in deform)
    share = config.normal_fraction / (1 + config.normal_fraction)
    mix = f"{1 - share:.0%} : {share:.0%}"
    md = f"""# Scaled MNIST: deformable convolution against a plain CNN

Command: `{command}`  ({duration(seconds, resumed)})

Data: {data_description}. Scaled digits: every image zoomed out by independent factors in
U(1.0, 2.5) for rows and columns about the centre and shifted by U(-0.2, 0.2) * 28 px in each
axis (nearest neighbour, edge replicated); the scaled test set is drawn once from a fixed seed.

Training: the CNN for {_epochs(config.cnn_epochs)} on normal digits, each moved by a random
whole-pixel shift of up to {config.cnn_shift} px per axis (Adam, learning rate
{config.cnn_lr:g} decaying along a cosine to 1/20 of it, batch {config.batch_size}); then
each other arm starts from it and trains for {_epochs(config.finetune_epochs)} (learning
rates: weights shared with the cnn, and all of the matched controls' weights,
{config.scaled_lr:g}, the offsets of the "offset" models {config.offset_lr:g}, those of the
"dcn" models {config.dcn_lr:g}; same schedule) on the fine-tuning data: every training digit
scaled afresh each epoch plus a random {config.normal_fraction:.0%} of them unscaled
(scaled and normal digits mixed {mix}).
The "dcn" models have {config.dcn_offset_groups} offset group(s)
{"and DCNv2 masks" if config.dcn_modulated else "and no masks"}.

{table(results)}

{arms}
{compared}
Accuracies are on the test digits described above; with several seeds, mean ± standard
deviation over the seeds (each seed's numbers are in results.json). "train s" is the time
of the arm's own training stage (the fine-tuned arms start from the trained cnn, whose time
is not included); "forward ms" the median time of a forward pass of 32 test digits in eval
mode, measured in this run after the arm's training.
For comparison, the Keras experiment (trained on 60,000 digits, fine-tuned on scaled digits
only):

{keras}

Models: `models/<arm>-seed<k>.npz` (`Sequential.load`). Figures: `training_curves.png`{sampling}.
"""
    _write_atomically(out / "results.md", md)
