"""edge-explain on real weights and real photos: filters, activations, Grad-CAM, weight change."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner
from edgeport.runtime.errors import LayerNameError
from edgeport.trainer.explain.activations import activations
from edgeport.trainer.explain.changes import weight_changes
from edgeport.trainer.explain.cli import main as explain_main
from edgeport.trainer.explain.gallery import grad_cam_gallery
from edgeport.trainer.explain.gradcam import grad_cam
from edgeport.trainer.explain.model import block_name, block_names
from edgeport.trainer.loading import load_model
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def imagenet_model():
    return load_model("torchvision:mobilenet_v2")


def assert_png(path: Path, min_side: int = 100) -> Image.Image:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and min(img.size) >= min_side and max(img.size) <= 2000, img.size
        return img.copy()


def test_block_names_group_every_parameter_by_top_level_block(imagenet_model):
    assert block_name("features.3.conv.0.0.weight") == "features.3"
    assert block_name("layer2.0.conv1.weight") == "layer2" and block_name("fc.bias") == "fc"
    assert block_name("blocks.3.1.conv_dw.weight") == "blocks.3"  # timm (EfficientNet-Lite0): one block per stage
    assert block_names(imagenet_model.model) == [f"features.{i}" for i in range(19)] + ["classifier"]


def test_cat_grad_cam_mass_lies_on_the_cat(imagenet_model, sample_photos, tmp_path):
    """The cat fills all of chelsea's 224×224 centre crop, so a box test there could not fail. Instead the
    cat photo is pasted into a known box of a real non-cat photo (the coffee cup) and Grad-CAM of the
    class the model predicts for the cat alone must land in that box."""
    chelsea, coffee = sample_photos[0], sample_photos[1]
    cat_class = grad_cam(imagenet_model, chelsea).predicted
    assert cat_class in ("Egyptian cat", "tabby", "tiger cat")
    canvas = Image.open(coffee).convert("RGB").resize((600, 600))
    canvas.paste(Image.open(chelsea).convert("RGB").resize((300, 200)), (0, 200))
    collage = tmp_path / "cat_on_coffee.png"
    canvas.save(collage)
    cam = grad_cam(imagenet_model, collage, target=cat_class)
    assert cam.heat.shape == (224, 224) and (cam.heat >= 0).all() and cam.heat.sum() > 0
    # The pasted cat, in crop coordinates (resize 600→256, centre crop offset 16): x 0–112, y 69–155;
    # checked by eye on the saved crop (cat at the left, cup and saucer elsewhere).
    x0, y0, x1, y1 = 0, 69, 112, 155
    inside = cam.heat[y0:y1, x0:x1].sum() / cam.heat.sum()
    area = (x1 - x0) * (y1 - y0) / (224 * 224)  # ≈ 0.19: what a uniform map would put inside
    assert inside > 0.5 and inside > area + 0.2, (inside, area)


def test_activations_by_depth_word_and_bad_layer_lists_valid_names(imagenet_model, sample_photos):
    acts = activations(imagenet_model, sample_photos[0], layer="early", top=8)
    assert acts.layer == "features.3" and len(acts.channels) == 8 and acts.maps.shape[0] == 8
    means = acts.maps.mean(axis=(1, 2))
    assert (np.diff(means) <= 1e-6).all()  # strongest first
    with pytest.raises(LayerNameError, match=r"features\.18.*early, middle, late"):
        activations(imagenet_model, sample_photos[0], layer="features.99")
    with pytest.raises(LayerNameError, match=r"features\.18"):
        grad_cam(imagenet_model, sample_photos[0], layer="layer4")


def _symlink_subset(hymenoptera: Path, root: Path, per_class: int) -> Path:
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for src in sorted((hymenoptera / split / cls).glob("*.jpg"))[:per_class]:
                (root / split / cls / src.name).symlink_to(src)
    return root


def test_head_only_run_changes_no_body_weight_and_unfrozen_run_does(hymenoptera, finetuned_run, tmp_path):
    from edgeport.trainer import TrainConfig, fit

    data = _symlink_subset(hymenoptera, tmp_path / "data", per_class=16)
    head_run = fit(data, tmp_path / "head", TrainConfig(freeze_epochs=1, epochs=0, seed=0), progress=False)
    head_only = {c.block: c for c in weight_changes(str(head_run.best_path))}
    body = [name for name in head_only if name != "classifier"]
    assert len(body) == 19 and all(head_only[n].relative_change == 0.0 and head_only[n].compared > 0 for n in body)
    # The 2-class head replaced ImageNet's 1000-class one: nothing to compare, so it is marked new.
    assert head_only["classifier"].relative_change is None and head_only["classifier"].new == 2

    body_run = fit(data, tmp_path / "body", TrainConfig(freeze_epochs=0, epochs=1, seed=0), progress=False)
    unfrozen = {c.block: c for c in weight_changes(str(body_run.best_path))}
    assert all(unfrozen[n].relative_change > 0 for n in body)
    # best.pt of the 1+1 fixture is whichever epoch validated best; the body moved only if that was epoch 2.
    tuned = {c.block: c for c in weight_changes(str(finetuned_run.best_path))}
    moved = all(tuned[n].relative_change > 0 for n in body)
    assert moved == (finetuned_run.best["phase"] == "unfrozen"), finetuned_run.best


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.links.append(attrs["src"])


def test_grad_cam_gallery_for_a_val_folder(finetuned_run, hymenoptera, tmp_path):
    folder = tmp_path / "val"
    for cls in ("ants", "bees"):
        (folder / cls).mkdir(parents=True)
        for src in sorted((hymenoptera / "val" / cls).glob("*.jpg"))[:2]:
            (folder / cls / src.name).symlink_to(src)
    (folder / "bees" / "broken <b>.jpg").write_bytes(b"not a jpeg")
    result = grad_cam_gallery(str(finetuned_run.best_path), folder, tmp_path / "gallery", progress=False)

    assert [item.source for item in result.failed] == ["bees/broken <b>.jpg"]
    done = [item for item in result.items if not item.error]
    assert len(done) == 4 and {item.true_label for item in done} == {"ants", "bees"}
    assert all(item.predicted in ("ants", "bees") and 0.5 <= item.score <= 1 for item in done)
    page = result.index.read_text()
    assert "broken &lt;b&gt;" in page and "<b>" not in page
    parser = _Links()
    parser.feed(page)
    assert len(parser.links) == 8
    for link in parser.links:
        assert not link.startswith("/") and "://" not in link
        assert_png(result.index.parent / unquote(link), min_side=100)


def test_cli_filters_changes_and_bad_layer(finetuned_run, sample_photos, tmp_path):
    runner = CliRunner()
    ckpt = str(finetuned_run.best_path)
    res = runner.invoke(explain_main, ["filters", ckpt, "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert_png(tmp_path / "f.png")
    res = runner.invoke(explain_main, ["changes", ckpt, "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "features.0" in res.output and "classifier     new" in res.output
    assert_png(tmp_path / "c.png")
    res = runner.invoke(explain_main, ["activations", ckpt, str(sample_photos[0]), "--layer", "nope",
                                       "--out", str(tmp_path / "a.png")])
    assert res.exit_code == 2 and "features.18" in res.output and not (tmp_path / "a.png").exists()


def test_cli_as_a_real_subprocess(sample_photos, tmp_path):
    out = tmp_path / "cam.png"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeport.trainer.explain.cli", "gradcam", "torchvision:mobilenet_v2",
         str(sample_photos[0]), "--out", str(out)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "features.18" in proc.stdout
    assert assert_png(out).size == (224, 224)


def test_explain_loads_efficientnet_lite0_like_export_does(tmp_path):
    """``edge-explain filters torchvision:efficientnet_lite0`` failed: explain built the contract from a
    torchvision weights enum that lite0 does not have. All three tools now load through trainer.loading."""
    runner = CliRunner()
    res = runner.invoke(explain_main, ["filters", "torchvision:efficientnet_lite0", "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert_png(tmp_path / "f.png")
    model = load_model("torchvision:efficientnet_lite0")
    assert model.contract.mean == (0.5, 0.5, 0.5)  # the TF reference preprocessing, not torchvision's ImageNet one
    changes = weight_changes(model)  # against the ImageNet weights of the same arch: itself
    assert changes and all(c.relative_change == 0.0 for c in changes if c.relative_change is not None)
