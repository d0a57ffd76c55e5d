"""Checkpoints of the experiment: one ``.npz`` per finished epoch of a stage, written
atomically (to a temporary file in the same folder, flushed, then renamed), so a crash or
a kill leaves either the previous checkpoint or the new one, never half a file.

A checkpoint holds the model's state ("model/<layer>.<key>"), the optimiser's state
("optim/<kind>/<param>") and a JSON "meta" record: stage, epoch, configuration, history.
"""
import json
import re
from pathlib import Path

import numpy as np
from ..atomic import atomic_file

_NAME = re.compile(r"^(?P<stage>[a-z_]+)-epoch(?P<epoch>\d+)\.npz$")


def path_for(folder, stage, epoch):
    return Path(folder) / f"{stage}-epoch{epoch:03d}.npz"


def save(folder, stage, epoch, model, optimizer, meta):
    """Write the checkpoint of ``stage`` after ``epoch`` finished epochs; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps({**meta, "stage": stage, "epoch": epoch}))
    final = path_for(folder, stage, epoch)
    with atomic_file(final) as f:
        np.savez(f, **arrays)
    return final


def latest(folder, stage):
    """The path of the stage's checkpoint with the most epochs, or None."""
    found = []
    for path in Path(folder).glob(f"{stage}-epoch*.npz"):
        match = _NAME.match(path.name)
        if match and match["stage"] == stage:
            found.append((int(match["epoch"]), path))
    return max(found)[1] if found else None


def newest(folder):
    """The most recently written checkpoint of any stage, or None."""
    found = [p for p in Path(folder).glob("*-epoch*.npz") if _NAME.match(p.name)]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def load(path):
    """(model state, optimiser state, meta) of a checkpoint."""
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        model = {k[len("model/"):]: f[k] for k in f.files if k.startswith("model/")}
        optim = {k[len("optim/"):]: f[k] for k in f.files if k.startswith("optim/")}
    return model, optim, meta


def any_in(folder):
    """True when ``folder`` holds checkpoints (of an earlier run)."""
    return Path(folder).is_dir() and any(Path(folder).glob("*-epoch*.npz"))
