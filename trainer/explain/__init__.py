"""edge-explain: what a network learned — first-layer filters, activations, Grad-CAM (one image or a
gallery), and the weight change per block against the pretrained weights. Models load through
``trainer.loading`` (the same specs as edge-export and edge-bench)."""
