"""The experiment's results: a printed table, ``results.json`` and ``results.md``."""
import json
from pathlib import Path

from ..atomic import atomic_file

MODEL_ORDER = ("cnn", "cnn_scaled", "deform_offset", "deform_dcn")
KERAS = {  # the Keras experiment's numbers (60,000 training digits), for comparison
    "cnn": (0.9884, 0.577), "deform_offset": (0.9016, 0.9323),
}
DESCRIPTIONS = {
    "cnn": "plain CNN trained on normal digits",
    "cnn_scaled": "the CNN fine-tuned on the fine-tuning data, every layer trainable (control)",
    "deform_offset": "Keras-style ConvOffset2D layers before conv12/21/22, fine-tuned (offsets and batch norms only)",
    "deform_dcn": "conv12/21/22 as DeformConv2D with {groups} offset group(s){masks}, fine-tuned (offset convolutions and batch norms only)",
}


def _describe(name, config):
    masks = " and DCNv2 masks" if config.dcn_modulated else ""
    return DESCRIPTIONS[name].format(groups=config.dcn_offset_groups, masks=masks)


def table(results):
    """The results as a Markdown table."""
    lines = ["| model | params | train s | forward ms (batch 32) | accuracy normal | accuracy scaled |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['train_seconds']:.0f} | "
                     f"{r['forward_ms_batch32']:.1f} | {r['test_accuracy_normal']:.4f} | "
                     f"{r['test_accuracy_scaled']:.4f} |")
    return "\n".join(lines)


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
               "seconds": seconds, "resumed": resumed, "models": results, "history": histories}
    _write_atomically(out / "results.json", json.dumps(payload, indent=2) + "\n")
    keras = "\n".join(f"- {name}: normal {n:.4f}, scaled {s:.4f}" for name, (n, s) in KERAS.items())
    md = f"""# Scaled MNIST: deformable convolution against a plain CNN

Command: `{command}`  ({duration(seconds, resumed)})

Data: {data_description}. Scaled digits: every image zoomed out by independent factors in
U(1.0, 2.5) for rows and columns about the centre and shifted by U(-0.2, 0.2) * 28 px in each
axis (nearest neighbour, edge replicated); the scaled test set is drawn once from a fixed seed.

Training: the CNN for {config.cnn_epochs} epochs on normal digits, each moved by a random
whole-pixel shift of up to {config.cnn_shift} px per axis (Adam, learning rate
{config.cnn_lr:g} decaying along a cosine to 1/20 of it, batch {config.batch_size}); then
each other model starts from it and trains for {config.finetune_epochs} epochs (learning
rates: deform_offset {config.offset_lr:g}, deform_dcn {config.dcn_lr:g}, cnn_scaled
{config.scaled_lr:g}, same schedule) on the
fine-tuning data: every training digit scaled afresh each epoch plus a random
{config.normal_fraction:.0%} of them unscaled (a {1 / (1 + config.normal_fraction):.0%} :
{config.normal_fraction / (1 + config.normal_fraction):.0%} mix of scaled and normal digits).
The deformable models train only their offset layers and batch norms, with the convolution
and dense weights frozen, as in the Keras experiment; cnn_scaled trains every layer.

{table(results)}

{chr(10).join(f"- {name}: {_describe(name, config)}" for name in MODEL_ORDER)}

"train s" is the time of the model's own training stage (the fine-tuned models start from
the trained cnn, whose time is not included). For comparison, the Keras experiment (trained
on 60,000 digits, fine-tuned on scaled digits only):
{keras}

Figures: `training_curves.png`, `sampling_deform_offset.png`, `sampling_deform_dcn.png`.
"""
    _write_atomically(out / "results.md", md)
