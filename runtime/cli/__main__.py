"""``python -m edgeport.runtime.cli``: edge-predict without its console script."""

from . import main

main()
