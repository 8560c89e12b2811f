"""``python -m semires ...`` (also ``torchrun ... -m semires train ...``)."""

from semires.cli import entry

entry()
