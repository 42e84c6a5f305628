"""Grad-CAM for a whole folder: one overlay per image and a static ``index.html`` to scroll through."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.errors import DataError, EdgeportError
from edgeport.runtime.inputs import iter_image_files
from tqdm.auto import tqdm

from .gradcam import grad_cam
from .model import LoadedModel, as_loaded_model
from .render import save_image

__all__ = ["GalleryItem", "GalleryResult", "grad_cam_gallery"]

THUMB_PX = 160


@dataclass
class GalleryItem:
    source: str
    overlay: str | None = None  # path relative to the gallery folder
    thumb: str | None = None
    true_label: str | None = None
    predicted: str | None = None
    score: float | None = None
    error: str | None = None


@dataclass
class GalleryResult:
    index: Path
    items: list[GalleryItem]

    @property
    def failed(self) -> list[GalleryItem]:
        return [item for item in self.items if item.error]


def _true_label(path: Path, labels: tuple[str, ...]) -> str | None:
    """The folder name when it is one of the model's labels (val/<class>/img.jpg), else unknown."""
    return path.parent.name if path.parent.name in labels else None


def _card(item: GalleryItem) -> str:
    name = html.escape(Path(item.source).name)
    if item.error:
        return f'<figure class="bad"><figcaption>{name}<br>error: {html.escape(item.error)}</figcaption></figure>'
    truth = html.escape(item.true_label) if item.true_label else "?"
    wrong = " wrong" if item.true_label and item.true_label != item.predicted else ""
    return (f'<figure class="card{wrong}"><a href="{quote(item.overlay)}"><img src="{quote(item.thumb)}" alt="{name}"></a>'
            f"<figcaption>{name}<br>true: {truth} · predicted: {html.escape(item.predicted)} {item.score:.2f}</figcaption></figure>")


def _page(title: str, items: list[GalleryItem]) -> str:
    cards = "\n".join(_card(item) for item in items)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} figure{{display:inline-block;width:{THUMB_PX}px;margin:6px;font-size:12px;
vertical-align:top}} .wrong figcaption{{color:#b00}} .bad{{color:#b00}}</style></head>
<body><h1>{html.escape(title)}</h1>
{cards}
</body></html>
"""


def grad_cam_gallery(source: LoadedModel | str, folder: str | Path, out_dir: str | Path, layer: str | None = None,
                     progress: bool = True) -> GalleryResult:
    """One Grad-CAM overlay (top class) per image under ``folder``; undecodable files are listed on the
    page with their error and the rest still get done."""
    source = as_loaded_model(source)
    folder, out_dir = Path(folder), Path(out_dir)
    files = iter_image_files(folder)
    if not files:
        raise DataError(f"no images found under {folder}; pass a folder of JPEG/PNG files")
    items = []
    for path in tqdm(files, desc="grad-cam", unit="img", disable=not progress):
        rel = path.relative_to(folder).with_suffix(".png")
        item = GalleryItem(path.relative_to(folder).as_posix(), true_label=_true_label(path, source.contract.labels))
        try:
            cam = grad_cam(source, path, layer)
        except EdgeportError as exc:  # a bad image: report it, finish the others
            item.error = str(exc)
        else:
            item.overlay, item.thumb = rel.as_posix(), ("thumbs" / rel).as_posix()
            item.predicted, item.score = cam.predicted, cam.predicted_score
            overlay = cam.overlay()
            save_image(overlay, out_dir / rel)
            overlay.thumbnail((THUMB_PX, THUMB_PX))
            save_image(overlay, out_dir / "thumbs" / rel)
        items.append(item)
    index = out_dir / "index.html"
    page = _page(f"Grad-CAM · {Path(source.name).name} · {folder.name}", items)
    atomic_write_bytes(index, lambda fh: fh.write(page.encode("utf-8")))
    return GalleryResult(index, items)
