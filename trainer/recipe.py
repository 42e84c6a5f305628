"""The fine-tuning recipe as data: every per-phase setting of ``edge-train`` in one table.

``training.py`` and ``strategies.plan_phases`` read these values and nothing else decides them, so a
change of recipe is a change here, measured and written down in docs/training.md ("Recipe, measured").
fastai 2.8's values are given beside each field for comparison (``Learner.fine_tune``, ``fit_one_cycle``,
``Learner(train_bn=True)``, ``Adam(wd=0.01)``). Torch-free, so the CLI can list the names instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .choices import HEADS

__all__ = ["Schedule", "Recipe", "RECIPES", "DEFAULT_RECIPE", "RENAMED_FIELDS", "with_current_names", "recipe_names",
           "get_recipe"]


@dataclass(frozen=True)
class Schedule:
    """One one-cycle phase's shape (torch ``OneCycleLR``): warm up from ``peak / div`` for ``pct_start`` of
    the steps, then anneal to ``peak / div / final_div``."""

    pct_start: float
    div: float
    final_div: float = 1e4


@dataclass(frozen=True)
class Recipe:
    """What the trainer does per phase, given the user's ``--lr`` (the head's peak LR while the body is frozen).

    fastai's ``fine_tune`` in these terms: ``unfrozen_lr_div=2``, ``lr_mult=100`` over 2 groups (body, head: ``flat_body``),
    frozen ``Schedule(0.99, 25, 4e3)``, unfrozen ``Schedule(0.3, 5, 2e4)``, ``train_frozen_bn_weights=True``,
    ``weight_decay=0.01`` (not on BatchNorm/bias), no label smoothing, and a BatchNorm/dropout MLP head.
    """

    name: str
    unfrozen_lr_div: float  # unfrozen phase: the head peaks at lr / unfrozen_lr_div
    lr_mult: float  # ... and the earliest body group at that / lr_mult, groups between geometrically
    frozen: Schedule  # the head-only phase of finetune / gradual
    unfrozen: Schedule  # the phase after it
    single: Schedule  # the one phase of the head and full strategies
    train_frozen_bn_weights: bool  # frozen phase: the body's BatchNorm weights train, layers in train mode (fastai's train_bn)
    label_smoothing: float  # cross-entropy label smoothing, every phase
    weight_decay: float  # AdamW's decoupled weight decay, every parameter
    head_init: str = "random"  # "linear_probe": the first head-only epoch fits the head to the body's features in
    # closed form (head_init.py; strategies.plan_phases); without a head-only epoch the probe starts the head
    update_bn_running_stats: bool = True  # finetune/gradual, unfrozen: BatchNorm whose weights train also updates its
    # running mean and variance; False keeps ImageNet's (full always updates them)
    flat_body: bool = False  # unfrozen: every body group at head / lr_mult (fastai's MobileNet split), not geometric
    ema_horizon: float = 0.0  # > 0: evaluate and save an EMA of the weights over this many epochs (averaging.py)
    head: str = "linear"  # choices.HEADS; "standardized": fixed (x - mean) / std before the Linear, from the probe
    head_refit: bool = False  # a run that trains the body ends with its head refitted by the linear probe on the
    # trained body's eval-transform features (FixRes); see strategies.plan_phases and head_init
    probed_head_lr_div: float = 1.0  # head-only epochs after the linear probe: the head peaks at lr / this. It starts
    # at the probe's optimum, which steps at the user's --lr throw off (strategies.plan_phases)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"recipe {self.name}: head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.head == "standardized" and self.head_init != "linear_probe":
            raise ValueError(f"recipe {self.name}: a standardized head takes its statistics from the linear probe")
        if self.head_refit and self.head_init != "linear_probe":
            raise ValueError(f"recipe {self.name}: the head refit takes its L2 from the linear probe")
        if self.probed_head_lr_div != 1.0 and self.head_init != "linear_probe":
            raise ValueError(f"recipe {self.name}: probed_head_lr_div divides the LR of epochs after a linear probe")


#: A random head trained by AdamW, the unfrozen head at lr/10, geometric body LRs, short warm-ups, frozen BatchNorm in
#: eval mode: the baseline every change of ``default`` is measured against, and the base the other recipes change.
CLASSIC = Recipe(
    name="classic",
    unfrozen_lr_div=10.0,
    lr_mult=100.0,
    frozen=Schedule(pct_start=0.2, div=10.0),
    unfrozen=Schedule(pct_start=0.2, div=10.0),
    single=Schedule(pct_start=0.2, div=10.0),
    train_frozen_bn_weights=False,
    label_smoothing=0.0,
    weight_decay=0.01,
)

#: ``classic`` with the head-only epoch a linear probe on standardized features, the unfrozen head at lr/2 and the body
#: flat at head/100 (fastai's values), BatchNorm keeping ImageNet's statistics in finetune/gradual, the weights averaged
#: over half an epoch, the head refitted on eval features at the end, and head-only epochs after the probe at lr/10:
#: each is here because it measured better than ``classic`` without it (docs/training.md, "Recipe, measured").
#: fastai's schedules and train_bn are left to the ``fastai`` recipe, to measure against; label smoothing is 0 in all three.
DEFAULT = replace(CLASSIC, name="default", unfrozen_lr_div=2.0, head_init="linear_probe", update_bn_running_stats=False,
                  flat_body=True, head="standardized", ema_horizon=0.5, head_refit=True, probed_head_lr_div=10.0)

#: fastai's ``fine_tune`` settings within our model and optimizer (torch AdamW, a Linear head, no momentum
#: cycling), to measure them one by one against ours.
FASTAI = replace(CLASSIC, name="fastai", unfrozen_lr_div=2.0, frozen=Schedule(0.99, 25.0, 4e3),
                 unfrozen=Schedule(0.3, 5.0, 2e4), single=Schedule(0.25, 25.0, 4e3), train_frozen_bn_weights=True,
                 flat_body=True)

RECIPES: dict[str, Recipe] = {r.name: r for r in (DEFAULT, CLASSIC, FASTAI)}
DEFAULT_RECIPE = DEFAULT.name

#: Former field names → today's. Recipe values are read back by name (a metrics.json's ``recipe``, a research
#: ``--variant FIELD=VALUE``, a cached benchmark row), so the old names must keep meaning the same fields.
RENAMED_FIELDS = {"train_bn_frozen": "train_frozen_bn_weights", "bn_stats": "update_bn_running_stats"}


def with_current_names(values: dict[str, Any]) -> dict[str, Any]:
    """Recipe values keyed by field name, any former name (``RENAMED_FIELDS``) read as today's."""
    return {RENAMED_FIELDS.get(name, name): value for name, value in values.items()}


def recipe_names() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    from edgeport.runtime.errors import UsageError

    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
