"""Checkpoints of the experiment: one ``.npz`` per finished epoch of a stage, written
atomically (to a temporary file in the same folder, flushed, then renamed), so a crash or
a kill leaves either the previous checkpoint or the new one, never half a file.

A stage is one arm trained with one seed, named "<arm>-seed<k>" (e.g. "deform_dcn-seed0");
its checkpoints are ``<stage>-epoch<NNN>.npz``. A checkpoint holds the model's state
("model/<layer>.<key>"), the optimiser's state ("optim/<kind>/<param>") and a JSON "meta"
record: stage, epoch, configuration, history. To read one into a model::

    from dcn_ref import models
    from dcn_ref.experiment import checkpoint
    state, optim_state, meta = checkpoint.load("results/scaled-mnist/checkpoints/"
                                               "deform_dcn_all-seed0-epoch004.npz")
    model = models.deform_cnn("dcn", offset_groups=meta["config"]["dcn_offset_groups"])
    model.load_state_dict(state)

(the exported ``models/<stage>.npz`` files hold the model's state alone and load with
``Sequential.load``).
"""
import json
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..atomic import atomic_file

_NAME = re.compile(r"^(?P<stage>[a-z0-9_]+-seed\d+)-epoch(?P<epoch>\d+)\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message starts with its file name."""


def stage_name(arm, seed):
    return f"{arm}-seed{seed}"


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


def _epochs(folder, stage):
    """[(epoch, path)] of the stage's checkpoint files, by name."""
    found = []
    for path in Path(folder).glob(f"{stage}-epoch*.npz"):
        match = _NAME.match(path.name)
        if match and match["stage"] == stage:
            found.append((int(match["epoch"]), path))
    return sorted(found)


def candidates(folder, stage):
    """The paths of the stage's checkpoints, most epochs first."""
    return [path for _, path in reversed(_epochs(folder, stage))]


def latest(folder, stage):
    """The path of the stage's checkpoint with the most epochs, or None."""
    found = _epochs(folder, stage)
    return found[-1][1] if found else None


def remove_older(folder, stage, epoch):
    """Delete the stage's checkpoints of fewer than ``epoch`` epochs."""
    for number, path in _epochs(folder, stage):
        if number < epoch and path.is_file():
            path.unlink()


def newest(folder):
    """The most recently written checkpoint of any stage, or None."""
    found = [p for p in Path(folder).glob("*-epoch*.npz") if _NAME.match(p.name) and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def remove_partial(folder):
    """Delete the temporary ``.part`` files that a killed write leaves; return their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.glob(".*.part") if p.is_file()]
    for path in leftovers:
        path.unlink()
    return [p.name for p in leftovers]


def load(path, stage=None):
    """(model state, optimiser state, meta) of a checkpoint.

    Raises CheckpointError (a ValueError) naming the file when it is not a readable
    checkpoint: a folder, empty, truncated or corrupt, an object array, a "meta" record that
    is not the expected JSON, or (with ``stage``) the checkpoint of another stage.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "meta" not in f.files:
                raise CheckpointError(f"{path.name}: no 'meta' record")
            meta = json.loads(str(f["meta"][()]))
            model = {k[len("model/"):]: f[k] for k in f.files if k.startswith("model/")}
            optim = {k[len("optim/"):]: f[k] for k in f.files if k.startswith("optim/")}
    except CheckpointError:
        raise
    except IsADirectoryError:
        raise CheckpointError(f"{path.name}: a folder, not a checkpoint file") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        reason = "empty file" if path.is_file() and path.stat().st_size == 0 else \
            f"truncated or corrupt ({type(exc).__name__}: {exc})"
        raise CheckpointError(f"{path.name}: {reason}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name}: unreadable 'meta' record ({exc})") from None
    except ValueError as exc:                 # an object array (pickles are refused), bad shapes
        raise CheckpointError(f"{path.name}: unreadable arrays ({exc})") from None
    needed = {"stage": str, "epoch": int, "config": dict, "history": list}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in needed.items()):
        raise CheckpointError(f"{path.name}: unreadable 'meta' record (expected the keys "
                              f"{', '.join(needed)})")
    if stage is not None and meta["stage"] != stage:
        raise CheckpointError(f"{path.name}: belongs to stage {meta['stage']!r}, not {stage!r}")
    if len(meta["history"]) != meta["epoch"]:
        raise CheckpointError(f"{path.name}: unreadable 'meta' record ({meta['epoch']} epochs "
                              f"but a history of {len(meta['history'])})")
    return model, optim, meta


def any_in(folder):
    """True when ``folder`` holds checkpoints (of an earlier run)."""
    return Path(folder).is_dir() and any(Path(folder).glob("*-epoch*.npz"))
