"""Finished studies behind the trainer's recipe and the INT8/OpenVINO choices: ``python -m research.<study>``;
their tables and conclusions are in research/README.md."""
