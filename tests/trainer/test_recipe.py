"""The fine-tuning recipe table (recipe.py): LR per group and phase, BatchNorm per strategy, --balance, --tta."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import fields, replace

import pytest
import torch
from click.testing import CliRunner
from edgeport.runtime.errors import UsageError
from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.balance import balanced_sampler, class_weights
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.cli import main as train_main
from edgeport.trainer.data import ImageListDataset, RecordingLoader, collate_with_failures, scan_image_folder
from edgeport.trainer.models import build_pretrained, replace_head
from edgeport.trainer.recipe import RECIPES, RENAMED_FIELDS, Recipe, Schedule, with_current_names
from edgeport.trainer.steps import tta_accuracy, tta_logits
from edgeport.trainer.strategies import set_trainable, train_mode
from edgeport.trainer.transforms import eval_transform
from torch import nn
from torch.utils.data import DataLoader
from torchvision import models as tvm

LR = 1e-3
# The documented values (docs/training.md, "Recipe, measured"), written out by hand: peak LR per layer group and
# phase for --lr 1e-3 --strategy finetune, and each phase's (pct_start, div).
EXPECTED = {
    "default": {  # the head-only epoch is the linear probe's fit (no optimizer); the body flat at the head's LR / 100
        "probe": None,
        "unfrozen": ({"body0": 5e-6, "body1": 5e-6, "body2": 5e-6, "head": 5e-4}, (0.2, 10.0)),
    },
    "classic": {
        "frozen": ({"head": 1e-3}, (0.2, 10.0)),
        "unfrozen": ({"body0": 1e-6, "body1": 1e-6 * 100 ** (1 / 3), "body2": 1e-6 * 100 ** (2 / 3), "head": 1e-4},
                     (0.2, 10.0)),
    },
    "fastai": {  # train_bn: the frozen body's BatchNorm weights train at the frozen phase's one LR
        "frozen": ({"body0": 1e-3, "body1": 1e-3, "body2": 1e-3, "head": 1e-3}, (0.99, 25.0)),
        "unfrozen": ({"body0": 5e-6, "body1": 5e-6, "body2": 5e-6, "head": 5e-4}, (0.3, 5.0)),
    },
}

HEAD_INIT = {"default": "linear_probe", "classic": "random", "fastai": "random"}


def _mobilenet() -> nn.Module:
    model = tvm.get_model("mobilenet_v2", weights=None)
    replace_head(model, 2)
    return model


def _bn_training(model: nn.Module) -> dict[str, bool]:
    return {n: m.training for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_table_gives_the_documented_lr_per_group_and_phase(recipe):
    assert sorted(RECIPES) == sorted(EXPECTED)  # a new recipe needs its documented row here
    phases = TrainConfig(recipe=recipe, lr=LR, freeze_epochs=1, epochs=2).phases()
    assert [p.name for p in phases] == list(EXPECTED[recipe])
    assert RECIPES[recipe].head_init == HEAD_INIT[recipe]
    assert [p.probe for p in phases] == [name == "probe" for name in EXPECTED[recipe]]
    for phase in (p for p in phases if not p.probe):
        lrs, (pct_start, div) = EXPECTED[recipe][phase.name]
        groups = set_trainable(_mobilenet(), phase)
        assert {g["name"]: g["lr"] for g in groups} == pytest.approx(lrs, rel=1e-9)
        assert (phase.schedule.pct_start, phase.schedule.div) == (pct_start, div)


def test_user_overrides_beat_the_recipe_and_bad_names_are_usage_errors():
    unfrozen = TrainConfig(lr=LR, lr_mult=10.0, unfrozen_lr_div=4.0).phases()[1]
    assert (unfrozen.head_lr, unfrozen.lr_mult) == (pytest.approx(2.5e-4), 10.0)
    with pytest.raises(UsageError, match="recipe"):
        TrainConfig(recipe="nope")
    with pytest.raises(UsageError, match="--balance"):
        TrainConfig(balance="oversample")
    # a recipe whose parts need the linear probe cannot be declared without it
    with pytest.raises(ValueError, match="statistics from the linear probe"):
        replace(RECIPES["default"], head_init="random")
    with pytest.raises(ValueError, match="refit takes its L2 from the linear probe"):
        replace(RECIPES["classic"], head_refit=True)
    with pytest.raises(ValueError, match="after a linear probe"):
        replace(RECIPES["classic"], probed_head_lr_div=10.0)


def test_former_recipe_field_names_read_as_todays():
    """A metrics.json ``recipe`` or a ``--variant`` spec with BatchNorm's two settings under their old names
    (``bn_stats``, ``train_bn_frozen``) still sets the same fields."""
    current = {f.name for f in fields(Recipe)}
    assert set(RENAMED_FIELDS.values()) <= current and not set(RENAMED_FIELDS) & current
    old = with_current_names({"bn_stats": True, "train_bn_frozen": True, "flat_body": False})
    assert replace(RECIPES["default"], **old) == replace(RECIPES["default"], update_bn_running_stats=True,
                                                         train_frozen_bn_weights=True, flat_body=False)


@pytest.mark.parametrize(("strategy", "recipe", "frozen_bn_trains"), [
    ("head", "default", False), ("finetune", "default", False), ("gradual", "default", False), ("full", "default", True),
    ("finetune", "classic", False), ("full", "classic", True), ("finetune", "fastai", True), ("head", "fastai", True),
])
def test_batchnorm_train_or_eval_per_strategy_and_phase(strategy, recipe, frozen_bn_trains):
    """Frozen BatchNorm keeps its ImageNet statistics (eval) unless the recipe trains it. Trainable BatchNorm updates
    its statistics in train mode, except in a recipe with ``update_bn_running_stats=False`` (default): its weights
    train, its running statistics stay ImageNet's (eval mode) in every phase."""
    extra = {"unfreeze": 2} if strategy == "gradual" else {}
    # full moves the whole body: its statistics follow
    updates_stats = RECIPES[recipe].update_bn_running_stats or strategy == "full"
    assert RECIPES[recipe].update_bn_running_stats == (recipe != "default")
    phases = TrainConfig(strategy=strategy, recipe=recipe, lr=LR, freeze_epochs=1, epochs=1, **extra).phases()
    model = _mobilenet()
    set_trainable(model, phases[0])
    train_mode(model, phases[0].update_bn_running_stats)
    assert set(_bn_training(model).values()) == {frozen_bn_trains and updates_stats}
    assert all(p.requires_grad == frozen_bn_trains for n, p in model.named_parameters() if n.startswith("features.0.1."))
    convs = [p.requires_grad for n, p in model.named_parameters() if n.startswith("features.0.0.")]
    assert convs == [strategy == "full"]  # only full trains the stem's conv from the start
    later = [p for p in phases[1:] if p.trainable_blocks != 0]  # the phase that trains the body, after the head's
    if later:
        set_trainable(model, later[0])
        train_mode(model, later[0].update_bn_running_stats)
        bns = _bn_training(model)
        assert bns["features.18.1"] == updates_stats and bns["features.0.1"] == (strategy == "finetune" and updates_stats)
        assert model.get_parameter("features.18.1.weight").requires_grad  # the weights train either way


# --- --balance ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory, hymenoptera):
    """A deliberately imbalanced subset of real photos: 40 ants : 4 bees in train (10:1), 6 + 6 in val."""
    root = tmp_path_factory.mktemp("imbalanced")
    for split, counts in (("train", {"ants": 40, "bees": 4}), ("val", {"ants": 6, "bees": 6})):
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for src in sorted((hymenoptera / split / cls).glob("*.jpg"))[:n]:
                (root / split / cls / src.name).symlink_to(src)
    return root


def test_class_weights_and_balanced_sampler_on_an_imbalanced_subset(imbalanced):
    split = scan_image_folder(imbalanced)
    labels = [y for _, y in split.train]
    assert Counter(labels) == {0: 40, 1: 4}
    assert class_weights(labels, 2).tolist() == pytest.approx([44 / 80, 44 / 8])
    assert class_weights([0, 1, 0, 1], 2).tolist() == pytest.approx([1.0, 1.0])  # balanced: plain loss
    sampler = balanced_sampler(labels, 2, seed=0)
    draws = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        draws += [labels[i] for i in sampler]
    assert len(draws) == 50 * 44 and 0.45 < sum(draws) / len(draws) < 0.55  # bees drawn as often as ants
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first  # seeded per epoch: repeatable runs and --resume


@pytest.mark.slow
@pytest.mark.parametrize("balance", ["weights", "sampler"])
def test_balance_flag_trains_on_the_imbalanced_subset(imbalanced, tmp_path, balance):
    out = tmp_path / balance
    result = CliRunner().invoke(train_main, [str(imbalanced), "--freeze-epochs", "1", "--epochs", "0", "--batch-size",
                                             "8", "--device", "cpu", "--balance", balance, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "--balance weights" in result.output  # the imbalance warning names the flag
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["balance"] == balance
    assert metrics["best"]["val_accuracy"] >= 0.5


# --- --tta -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_batch(hymenoptera):
    from edgeport.trainer.models import arch_contract

    files = sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[:3] + sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:3]
    dataset = ImageListDataset([(f, int("bees" in str(f))) for f in files], eval_transform(arch_contract("mobilenet_v2")))
    return RecordingLoader(DataLoader(dataset, batch_size=6, collate_fn=collate_with_failures))


def test_tta_is_the_mean_softmax_of_the_crop_and_its_mirror(real_batch):
    model = build_pretrained("mobilenet_v2").eval()
    x, y = next(iter(real_batch))
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
        got = tta_logits(model, x).exp()
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, model(x).softmax(1), atol=1e-4)  # the mirror really changes the answer
    correct, counted = tta_accuracy(model, real_batch, torch.device("cpu"))
    assert counted == 6 and correct == int((expected.argmax(1) == y).sum())


@pytest.mark.slow
def test_tta_is_reported_beside_accuracy_and_never_changes_the_model(hymenoptera, tmp_path):
    data = tmp_path / "tiny"  # 8 train + 4 val real photos per class
    for split, n in (("train", 8), ("val", 4)):
        for cls in ("ants", "bees"):
            (data / split / cls).mkdir(parents=True)
            for src in sorted((hymenoptera / split / cls).glob("*.jpg"))[:n]:
                (data / split / cls / src.name).symlink_to(src)
    tiny = {"freeze_epochs": 1, "epochs": 0, "batch_size": 8, "seed": 0, "device": "cpu"}
    plain = fit(data, tmp_path / "plain", TrainConfig(**tiny), progress=False)
    tta = fit(data, tmp_path / "tta", TrainConfig(**tiny, tta=True), progress=False)
    row = tta.history[0]
    assert 0.0 <= row["val_accuracy_tta"] <= 1.0 and "val_accuracy_tta" not in plain.history[0]
    assert row["val_accuracy"] == plain.history[0]["val_accuracy"]
    saved = json.loads(tta.metrics_path.read_text())
    assert saved["history"][0]["val_accuracy_tta"] == row["val_accuracy_tta"]
    a, b = load_checkpoint(plain.best_path), load_checkpoint(tta.best_path)
    assert a["state_dict"].keys() == b["state_dict"].keys()  # no TTA wrapper in what edge-export reads
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_schedule_defaults_match_torch_one_cycle():
    assert Schedule(0.2, 10.0).final_div == 1e4  # torch OneCycleLR's final_div_factor, so 'classic' is unchanged


def test_one_cycle_survives_a_one_step_warm_up():
    """0.2 × 5 steps (44 photos at batch 8) made torch's OneCycleLR divide by zero before issue #14."""
    from edgeport.trainer.training import _pct_start

    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=5, pct_start=0.2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=5, pct_start=_pct_start(0.2, 5))
    lrs = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(1e-3, rel=0.2) and lrs[-1] < 1e-6  # warms up, then anneals
    assert _pct_start(0.2, 7) == 0.2  # untouched wherever torch copes


def test_a_default_run_starts_from_the_probe_and_keeps_imagenet_bn_statistics(finetuned_run):
    """The session's real fine-tune (default recipe, 1 frozen + 1 unfrozen epoch on hymenoptera): the probe as its
    head-only epoch, the standardized head, ImageNet's BatchNorm statistics, and the weight average it scores and
    saves."""
    from edgeport.trainer.checkpoint import load_run_state

    metrics = json.loads(finetuned_run.metrics_path.read_text())
    assert metrics["recipe"]["head_init"] == "linear_probe" and metrics["linear_probe"]["images"] == 245
    assert metrics["linear_probe"]["cv_accuracy"] >= 0.9  # 245 real photos, 3-fold, two classes
    probe_epoch = metrics["history"][0]
    assert probe_epoch["phase"] == "probe" and probe_epoch["val_accuracy"] >= 0.9  # the probe's head, scored on val
    assert probe_epoch["train_loss"] == pytest.approx(metrics["linear_probe"]["train_loss"])
    state = load_run_state(finetuned_run.best_path.parent)
    final = state["model"]
    imagenet = build_pretrained("mobilenet_v2").state_dict()
    stats = [k for k in final if k.endswith(("running_mean", "running_var"))]
    body = [k for k in stats if not k.startswith("classifier.")]
    assert len(body) == 2 * 52 and all(torch.equal(final[k], imagenet[k]) for k in body)
    # the standardized head's statistics are the probe's, not the initial (0, 1), and unchanged by training
    assert sorted(set(stats) - set(body)) == ["classifier.1.0.running_mean", "classifier.1.0.running_var"]
    assert final["classifier.1.0.running_mean"].min() >= 0 and final["classifier.1.0.running_mean"].max() > 0.1
    best = torch.load(finetuned_run.best_path, weights_only=True)
    assert best["head"] == "standardized"
    # recipe ema_horizon: the run scores and saves the weight average, whose state --resume carries on
    assert int(state["average"]["n_averaged"]) == 245 // 16  # every step of the unfrozen epoch (drop_last batches of 16)
    averaged = {k.removeprefix("module."): v for k, v in state["average"].items() if k.startswith("module.")}
    assert averaged.keys() == final.keys()
    assert not torch.equal(averaged["features.18.0.weight"], final["features.18.0.weight"])  # an average, not a copy
    # best.pt holds the weights the epoch scored (test_train_parity: the export of best.pt scores its val accuracy)
    if best["epoch"] == 2:
        torch.testing.assert_close(best["state_dict"]["features.18.0.weight"], averaged["features.18.0.weight"])
    else:  # the probe's epoch: ImageNet's body under the probe's head
        assert torch.equal(best["state_dict"]["features.18.0.weight"], imagenet["features.18.0.weight"])
    # the average's standardizer was recomputed by the last epoch's head refit; the trained weights keep the probe's
    source = averaged if best["epoch"] == 2 else final
    torch.testing.assert_close(best["state_dict"]["classifier.1.0.running_var"], source["classifier.1.0.running_var"])
    assert not torch.equal(final["features.18.0.weight"], imagenet["features.18.0.weight"])  # the body did train
    assert not torch.equal(final["features.18.1.weight"], imagenet["features.18.1.weight"])  # BatchNorm weights too


def test_the_default_run_ends_with_its_head_refitted_on_the_trained_body(finetuned_run, hymenoptera):
    """Recipe ``head_refit``: the last epoch's scored weights (the average) carry a head fitted in closed form, with
    the probe's L2, to the trained body's eval-transform features of the training photos, not the head its steps on
    random crops left."""
    from edgeport.trainer.checkpoint import load_run_state
    from edgeport.trainer.head_init import fit_logistic, head_inputs, standardization
    from edgeport.trainer.models import build_for_checkpoint

    metrics = json.loads(finetuned_run.metrics_path.read_text())
    refit = metrics["head_refit"]
    assert refit["epoch"] == 2 and refit["images"] == 245
    assert refit["l2"] == metrics["linear_probe"]["l2"] and refit["cv_accuracy"] is None  # the probe's L2, no search
    assert refit["lr_find"] is None and metrics["linear_probe"]["lr_find"]  # ... and no LR sweep that nothing reads
    state = load_run_state(finetuned_run.best_path.parent)
    averaged = {k.removeprefix("module."): v for k, v in state["average"].items() if k.startswith("module.")}
    model = build_for_checkpoint("mobilenet_v2", 2, averaged, "standardized").eval()
    contract = load_checkpoint(finetuned_run.best_path)["contract"]
    train = ImageListDataset(scan_image_folder(hymenoptera).train, eval_transform(contract),
                             blank=torch.zeros(3, *contract.input_size))
    x, y, _ = head_inputs(model, DataLoader(train, batch_size=32, collate_fn=collate_with_failures),
                          torch.device("cpu"), progress=False)
    mean, var, z = standardization(x, model.classifier[1][0].eps)
    torch.testing.assert_close(averaged["classifier.1.0.running_mean"], mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(averaged["classifier.1.0.running_var"], var, rtol=1e-4, atol=1e-5)
    weight, bias = fit_logistic(z, y, 2, refit["l2"])
    torch.testing.assert_close(averaged["classifier.1.1.weight"], weight, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(averaged["classifier.1.1.bias"], bias, rtol=1e-3, atol=1e-3)
    # the same tolerance tells the refit from the head the steps left, which the trained weights keep
    assert not torch.allclose(state["model"]["classifier.1.1.weight"], weight, rtol=1e-3, atol=1e-3)
