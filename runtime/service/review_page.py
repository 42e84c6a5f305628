"""The review page itself: HTML rendered here from the server's status, and the little plain JavaScript and CSS it
loads from the box (``/app.js``, ``/app.css``: the Content-Security-Policy allows no inline script and no other
origin). The grid's tiles are rendered once, here; the script clones the page's ``<template>`` for captures that
arrive later, so the markup of a tile has one source.

The class buttons are the serving model's labels: when ``/api/status`` names other classes (a hot reload to a
model with other labels), the script loads the page again, so the buttons, keys and counts follow the new model.

Keys: ←/→ choose a frame, 1–9 label it with that class, U marks it unknown, Delete or X deletes it.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["render_page", "APP_JS", "APP_CSS"]


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _camera(source_id: str, view: dict[str, Any]) -> str:
    score = f"{view['score']:.3f}" if isinstance(view.get("score"), (int, float)) else "–"
    state = f'<dd data-k="state">{_e(view["state"])}</dd>' if view.get("state") is not None else ""
    error = view.get("last_error") or ""
    event = view.get("last_event") or ""
    return (f'<article class="cam" data-source="{_e(source_id)}"><h2>{_e(source_id)}</h2>'
            f'<img alt="latest frame of {_e(source_id)}" src="/live/{quote(source_id)}.jpg">'
            f'<dl><dt>label</dt><dd data-k="label">{_e(view.get("label") or "–")}</dd>'
            f'<dt>score</dt><dd data-k="score">{score}</dd>'
            f'{"<dt>state</dt>" + state if state else ""}'
            f'<dt>FPS</dt><dd data-k="fps">{_e(view.get("fps"))}</dd>'
            f'<dt>status</dt><dd data-k="status">{_e(view.get("status") or "–")}</dd>'
            f'<dt>last event</dt><dd data-k="last_event">{_e(event or "–")}</dd>'
            f'<dt>last error</dt><dd data-k="last_error" class="error">{_e(error or "–")}</dd></dl></article>')


def _buttons(classes: list[str]) -> str:
    keys = [f'<button type="button" data-label="{_e(c)}" title="key {i + 1}">{i + 1 if i < 9 else ""} {_e(c)}</button>'
            for i, c in enumerate(classes)]
    return "".join(keys) + ('<button type="button" data-label="unknown" title="key U">U unknown</button>'
                            '<button type="button" data-label="delete" class="danger" title="key Delete or X">X delete</button>')


def _tile(capture: dict[str, Any], buttons: str) -> str:
    top = "".join(f'<li>{_e(t.get("label"))} <b>{float(t.get("score", 0)):.2f}</b></li>' for t in capture["top_k"])
    return (f'<figure class="tile" tabindex="0" data-source="{_e(capture["source"])}" data-name="{_e(capture["name"])}">'
            f'<img loading="lazy" alt="captured frame" src="/capture/{quote(capture["source"])}/{quote(capture["name"])}">'
            f'<figcaption><span class="src">{_e(capture["source"])} · {_e(capture.get("time"))}</span>'
            f'<ol>{top}</ol><div class="labels">{buttons}</div></figcaption></figure>')


def render_page(status: dict[str, Any], with_token: bool) -> str:
    """The whole page for ``status`` (``ReviewServer.status()``)."""
    classes = status["classes"]
    buttons = _buttons(classes)
    cameras = "".join(_camera(k, v) for k, v in status["cameras"].items()) or "<p>no source yet</p>"
    counts = "".join(f'<li data-class="{_e(k)}">{_e(k)} <b>{v}</b></li>' for k, v in status["counts"].items())
    tiles = "".join(_tile(c, buttons) for c in status["captures"])
    template = _tile({"source": "", "name": "", "time": "", "top_k": []}, buttons)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeport review</title><link rel="stylesheet" href="/app.css"></head>
<body><header><h1>edgeport review</h1><ul id="counts">{counts}</ul></header>
<section id="cameras">{cameras}</section>
<h2>Captured frames <small id="waiting">{len(status["captures"])} to label</small></h2>
<p class="help">Click a class, or choose a frame (←/→) and press 1–{min(len(classes), 9)}; U: unknown; Delete/X: delete.
{"" if not with_token else "Signed in by token."}</p>
<p id="message" role="status"></p>
<section id="grid">{tiles}</section>
<template id="tile-template">{template}</template>
<script src="/app.js"></script></body></html>
"""


APP_JS = r"""'use strict';
const grid = document.getElementById('grid');
const message = document.getElementById('message');
const template = document.getElementById('tile-template');
// The classes this page was rendered with; after a hot reload to a model with other labels the box renders anew.
const classes = Array.from(template.content.querySelectorAll('button[data-label]'), b => b.dataset.label)
  .filter(name => name !== 'unknown' && name !== 'delete');
let selected = null;

function say(text, bad) { message.textContent = text; message.className = bad ? 'error' : ''; }
function tiles() { return Array.from(grid.querySelectorAll('.tile')); }
function select(tile) {
  if (selected) selected.classList.remove('selected');
  selected = tile || null;
  if (selected) { selected.classList.add('selected'); selected.focus({preventScroll: false}); }
}
function showCounts(counts) {
  const list = document.getElementById('counts');
  list.textContent = '';
  for (const [name, n] of Object.entries(counts)) {
    const li = document.createElement('li'); li.dataset.class = name;
    const b = document.createElement('b'); b.textContent = n;
    li.append(name + ' ', b); list.append(li);
  }
  document.getElementById('waiting').textContent = tiles().length + ' to label';
}
async function label(tile, name) {
  const body = JSON.stringify({source: tile.dataset.source, name: tile.dataset.name, label: name});
  const answer = await fetch('/api/label', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                            credentials: 'same-origin', body});
  const data = await answer.json().catch(() => ({error: answer.statusText}));
  if (!answer.ok) { say(data.error || ('error ' + answer.status), true); return; }
  const next = tile.nextElementSibling || tile.previousElementSibling;
  tile.remove();
  select(next && next.classList.contains('tile') ? next : null);
  showCounts(data.counts);
  say(data.labelled + ' → ' + data.label);
}
function addTile(capture) {
  const tile = template.content.firstElementChild.cloneNode(true);
  tile.dataset.source = capture.source; tile.dataset.name = capture.name;
  tile.querySelector('img').src = '/capture/' + encodeURIComponent(capture.source) + '/' + encodeURIComponent(capture.name);
  tile.querySelector('.src').textContent = capture.source + ' · ' + (capture.time || '');
  const list = tile.querySelector('ol');
  for (const t of capture.top_k) {
    const li = document.createElement('li'); const b = document.createElement('b');
    b.textContent = Number(t.score).toFixed(2); li.append(t.label + ' ', b); list.append(li);
  }
  grid.prepend(tile);
}
function showCameras(cameras) {
  for (const [id, view] of Object.entries(cameras)) {
    const card = document.querySelector('.cam[data-source="' + CSS.escape(id) + '"]');
    if (!card) continue;
    for (const dd of card.querySelectorAll('dd[data-k]')) {
      const v = view[dd.dataset.k];
      dd.textContent = v === null || v === undefined || v === '' ? '–' : (dd.dataset.k === 'score' ? Number(v).toFixed(3) : v);
    }
    if (view.has_frame) card.querySelector('img').src = '/live/' + encodeURIComponent(id) + '.jpg?t=' + Date.now();
  }
}
async function refresh() {
  try {
    const answer = await fetch('/api/status', {credentials: 'same-origin'});
    if (!answer.ok) return;
    const status = await answer.json();
    if (JSON.stringify(status.classes) !== JSON.stringify(classes)) { location.reload(); return; }
    showCameras(status.cameras);
    const shown = new Set(tiles().map(t => t.dataset.source + '/' + t.dataset.name));
    for (const capture of status.captures.slice().reverse()) {
      if (!shown.has(capture.source + '/' + capture.name)) addTile(capture);
    }
    showCounts(status.counts);
  } catch (e) { /* the box restarting: try again at the next tick */ }
}
grid.addEventListener('click', event => {
  const button = event.target.closest('button[data-label]');
  const tile = event.target.closest('.tile');
  if (tile) select(tile);
  if (button && tile) label(tile, button.dataset.label);
});
document.addEventListener('keydown', event => {
  const all = tiles();
  if (!all.length) return;
  if (!selected || !selected.isConnected) select(all[0]);
  const i = all.indexOf(selected);
  if (event.key === 'ArrowRight') select(all[Math.min(i + 1, all.length - 1)]);
  else if (event.key === 'ArrowLeft') select(all[Math.max(i - 1, 0)]);
  else if (/^[1-9]$/.test(event.key)) {
    const button = selected.querySelectorAll('button[data-label]')[Number(event.key) - 1];
    if (button && !['unknown', 'delete'].includes(button.dataset.label)) label(selected, button.dataset.label);
  } else if (event.key === 'u' || event.key === 'U') label(selected, 'unknown');
  else if (event.key === 'Delete' || event.key === 'x' || event.key === 'X') label(selected, 'delete');
  else return;
  event.preventDefault();
});
setInterval(refresh, 2000);
"""

APP_CSS = """body{font-family:system-ui,sans-serif;margin:1rem;background:#f6f6f4;color:#222}
header{display:flex;align-items:baseline;gap:2rem;flex-wrap:wrap}h1{font-size:1.3rem;margin:0}
#counts{display:flex;gap:1rem;list-style:none;padding:0;margin:0}#counts li{background:#fff;padding:.2rem .6rem;border-radius:4px}
#cameras{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.cam{background:#fff;padding:.5rem;border-radius:6px;width:300px}.cam h2{font-size:1rem;margin:0 0 .3rem}
.cam img{width:100%;height:170px;object-fit:contain;background:#000}
.cam dl{display:grid;grid-template-columns:auto 1fr;gap:.1rem .6rem;margin:.3rem 0 0;font-size:.85rem}
.cam dt{color:#666}.cam dd{margin:0}.error{color:#b00020}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:.8rem}
.tile{background:#fff;margin:0;padding:.4rem;border-radius:6px;border:3px solid transparent}
.tile.selected{border-color:#1565c0}.tile img{width:100%;height:150px;object-fit:cover}
.tile ol{margin:.2rem 0;padding-left:1.2rem;font-size:.85rem}.src{font-size:.75rem;color:#666}
.labels{display:flex;flex-wrap:wrap;gap:.25rem}.labels button{font-size:.8rem;padding:.2rem .4rem;cursor:pointer}
.labels .danger{color:#b00020}.help{font-size:.85rem;color:#555}
"""
