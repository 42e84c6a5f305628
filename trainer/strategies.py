"""Transfer-learning strategies by name, and the layer groups they (and Grad-CAM) work on.

``layer_blocks`` cuts any registered architecture into its ordered pretrained blocks (the
children of ``features`` for MobileNet/EfficientNet, stem + ``layer1..4`` for ResNet) plus the
head; ``layer_groups`` merges those blocks into a few contiguous groups for discriminative LRs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeport.runtime.errors import UsageError
from torch import nn

from .choices import STRATEGIES
from .models import head_module_name
from .recipe import CLASSIC, Recipe, Schedule

__all__ = ["STRATEGIES", "LayerGroup", "Phase", "layer_blocks", "layer_groups", "discriminative_lrs",
           "plan_phases", "set_trainable", "train_mode"]

# Containers whose children are the pretrained stages: torchvision's ``features``, timm's ``blocks``,
# lukemelas EfficientNet's ``_blocks``.
STAGE_CONTAINERS = ("features", "blocks", "_blocks")


@dataclass(frozen=True)
class LayerGroup:
    """Named parameters that share one learning rate; ``blocks`` are module names, earliest first."""

    name: str
    blocks: tuple[str, ...]
    params: tuple[str, ...]


@dataclass(frozen=True)
class Phase:
    """One one-cycle phase: how many epochs, how many body blocks trainable (from the end), which LRs."""

    name: str
    epochs: int
    trainable_blocks: int | None  # None: every body block; 0: head only
    head_lr: float
    lr_mult: float  # earliest trainable group gets head_lr / lr_mult; 1.0: one LR for all
    schedule: Schedule = CLASSIC.single  # the one-cycle shape (recipe.Recipe)
    train_frozen_bn_weights: bool = False  # frozen blocks' BatchNorm weights train too, layers in train mode (fastai's train_bn)
    flat_body: bool = False  # every trainable body group at head_lr / lr_mult instead of a geometric spread
    update_bn_running_stats: bool = True  # BatchNorm whose weights train updates its running mean and variance (False:
    # ImageNet's stay, the weights still train)
    probe: bool = False  # one head-only epoch that fits the head in closed form (head_init.linear_probe), no SGD
    refit: bool = False  # after its last epoch's steps, the head is refitted in closed form on eval-transform features


def _owns(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_blocks(model: nn.Module) -> tuple[list[str], str]:
    """The body's pretrained blocks in forward order (module names) and the head's name.

    A block is a child of ``features`` (``blocks``) when the model has one, otherwise a top-level child; a child
    that contains the head is opened up, so pretrained layers beside the head (MobileNetV3's
    ``classifier.0``) stay in the body. Parameter-free modules (ReLU, pooling, dropout) are left out.
    """
    head = head_module_name(model)
    blocks: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            if name == head or not any(True for _ in child.parameters()):
                continue
            if name in STAGE_CONTAINERS or _owns(name, head):
                visit(name + ".", child)
            else:
                blocks.append(name)

    visit("", model)
    return blocks, head


def layer_groups(model: nn.Module, n_body_groups: int = 3) -> list[LayerGroup]:
    """Contiguous body groups (earliest first, as even in block count as possible) then the head.

    Public for other tools (e.g. Grad-CAM picks its target layer from the last body group).
    """
    blocks, head = layer_blocks(model)
    n = max(1, min(n_body_groups, len(blocks)))
    bounds = [round(i * len(blocks) / n) for i in range(n + 1)]
    names = [name for name, _ in model.named_parameters()]
    groups = []
    for i in range(n):
        members = tuple(blocks[bounds[i]:bounds[i + 1]])
        params = tuple(p for p in names if any(_owns(b, p) for b in members))
        groups.append(LayerGroup(f"body{i}", members, params))
    groups.append(LayerGroup("head", (head,), tuple(p for p in names if _owns(head, p))))
    return groups


def discriminative_lrs(n_groups: int, head_lr: float, lr_mult: float, flat_body: bool = False) -> list[float]:
    """fastai's ``slice(lr / lr_mult, lr)``: geometric from the earliest group up to the head; with ``flat_body``
    every body group at ``lr / lr_mult`` (fastai's two-group body/head split, which it uses for MobileNet)."""
    if n_groups == 1:
        return [head_lr]
    low = head_lr / lr_mult
    if flat_body:
        return [low] * (n_groups - 1) + [head_lr]
    return [low * (head_lr / low) ** (i / (n_groups - 1)) for i in range(n_groups)]


def plan_phases(strategy: str, *, freeze_epochs: int, epochs: int, lr: float, unfrozen_lr_div: float | None = None,
                lr_mult: float | None = None, unfreeze: int | None, recipe: Recipe = CLASSIC) -> list[Phase]:
    """The phases a strategy runs; every strategy trains ``freeze_epochs + epochs`` epochs in total.

    LRs and schedules come from ``recipe``; ``unfrozen_lr_div`` / ``lr_mult`` override its values when given. With
    the recipe's linear probe, the first head-only epoch is the probe's fit (a ``probe`` phase of one epoch): the
    same pass over the training images, the head solved instead of stepped; head-only epochs after it start from that
    optimum, at ``lr / recipe.probed_head_lr_div``. With the recipe's ``head_refit`` a last
    phase that trains the body ends with the same fit on the trained body (``refit``): its steps saw random crops, which
    show objects larger than the eval transform's centre crop, and a head fitted to them loses accuracy on the
    centre crops it is deployed on (the train-test resolution discrepancy of FixRes, Touvron et al., NeurIPS 2019).
    """
    div = recipe.unfrozen_lr_div if unfrozen_lr_div is None else unfrozen_lr_div
    mult = recipe.lr_mult if lr_mult is None else lr_mult
    frozen = Phase("frozen", freeze_epochs, 0, lr, 1.0, recipe.frozen, recipe.train_frozen_bn_weights)
    unfrozen_lr = lr / div
    if strategy == "head":
        phases = [Phase("frozen", freeze_epochs + epochs, 0, lr, 1.0, recipe.single, recipe.train_frozen_bn_weights)]
    elif strategy == "finetune":
        phases = [frozen, Phase("unfrozen", epochs, None, unfrozen_lr, mult, recipe.unfrozen, flat_body=recipe.flat_body,
                                update_bn_running_stats=recipe.update_bn_running_stats)]
    elif strategy == "gradual":
        phases = [frozen, Phase("gradual", epochs, unfreeze, unfrozen_lr, mult, recipe.unfrozen, flat_body=recipe.flat_body,
                                update_bn_running_stats=recipe.update_bn_running_stats)]
    elif strategy == "full":  # the whole body at --lr moves far from ImageNet: its BatchNorm statistics must follow
        phases = [Phase("full", freeze_epochs + epochs, None, lr, 1.0, recipe.single)]
    else:
        raise UsageError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    phases = [p for p in phases if p.epochs > 0]
    if recipe.head_init == "linear_probe" and phases and phases[0].trainable_blocks == 0:
        first = phases.pop(0)
        rest = [replace(first, epochs=first.epochs - 1, head_lr=first.head_lr / recipe.probed_head_lr_div)] \
            if first.epochs > 1 else []
        phases = [Phase("probe", 1, 0, first.head_lr, 1.0, probe=True), *rest, *phases]
    last = phases[-1] if phases else None
    if recipe.head_refit and last is not None and (last.trainable_blocks != 0 or last.train_frozen_bn_weights):
        phases[-1] = replace(last, refit=True)  # (on a body that did not train the refit would be the probe again)
    return phases


def set_trainable(model: nn.Module, phase: Phase, n_body_groups: int = 3) -> list[dict]:
    """Freeze all but the phase's last blocks and the head; optimizer param groups with their peak LRs.

    With ``phase.train_frozen_bn_weights`` the BatchNorm weights of frozen blocks train too (fastai's ``train_bn``), at the
    LR of their layer group, and ``train_mode`` then lets them update their running statistics.
    """
    blocks, head = layer_blocks(model)
    k = len(blocks) if phase.trainable_blocks is None else min(phase.trainable_blocks, len(blocks))
    trainable = blocks[len(blocks) - k:] + [head]
    bn_params = {f"{m}.{p}" if m else p for m, module in model.named_modules()
                 if isinstance(module, nn.modules.batchnorm._BatchNorm) for p, _ in module.named_parameters(recurse=False)}
    named = dict(model.named_parameters())
    for name, param in named.items():
        param.requires_grad = any(_owns(b, name) for b in trainable) or (phase.train_frozen_bn_weights and name in bn_params)
    groups = [g for g in layer_groups(model, n_body_groups) if any(named[p].requires_grad for p in g.params)]
    lrs = discriminative_lrs(len(groups), phase.head_lr, phase.lr_mult, phase.flat_body)
    return [{"params": [named[p] for p in g.params if named[p].requires_grad], "lr": lr, "name": g.name}
            for g, lr in zip(groups, lrs)]


def train_mode(model: nn.Module, update_bn_running_stats: bool = True) -> None:
    """``train()``, except BatchNorm layers whose weights are frozen keep their ImageNet statistics, and with
    ``update_bn_running_stats=False`` every BatchNorm does: normalised by its running statistics, which stay as they
    are, while its weight and bias still train (the recipe's ``update_bn_running_stats``)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not update_bn_running_stats or not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
