"""The settings of the scaled-MNIST experiment: the default run and ``--quick``."""
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Every number that decides the results (a resumed run must use the same ones).

    Arms (``stages.ARMS``): "cnn" trains the plain CNN on normal digits for ``cnn_epochs``;
    every other arm starts from it and trains for ``finetune_epochs`` on the fine-tuning
    data: every training digit scaled afresh each epoch, plus a random ``normal_fraction``
    of them unscaled. Which arms run, and how many seeds, does not change any arm's numbers,
    so it is not part of the configuration.
    """
    seed: int = 0
    train_limit: int = 0            # train on a fixed random n of the training digits; 0: all
    test_limit: int = 0             # evaluate on a fixed random n of the test digits; 0: all
    batch_size: int = 32
    cnn_epochs: int = 12
    cnn_lr: float = 2e-3            # Adam; cosine decay to lr/20 over the stage
    cnn_shift: int = 2              # cnn stage: random whole-pixel shifts up to this, per axis
    finetune_epochs: int = 4
    offset_lr: float = 5e-4         # deform_offset (Adam, cosine decay like the cnn's)
    dcn_lr: float = 2e-4            # deform_dcn: an offset sums 9*C_in weights, so small steps
    scaled_lr: float = 2e-3         # cnn_scaled, the control
    dcn_modulated: bool = False     # DCNv2 masks in the dcn model
    dcn_offset_groups: int = 4      # offset groups of the dcn model's DeformConv2D layers
    normal_fraction: float = 0.5    # unscaled digits mixed into fine-tuning, share of the set
    weight_decay: float = 0.0
    curve_test_limit: int = 500     # test digits (normal and scaled) evaluated after each epoch

    @classmethod
    def quick(cls, seed=0):
        """A small run of the whole pipeline, for a look and for tests (a few minutes)."""
        return cls(seed=seed, train_limit=1000, test_limit=1000, cnn_epochs=2, finetune_epochs=1,
                   curve_test_limit=200)

    def as_dict(self):
        return dataclasses.asdict(self)
