"""What dalib prints: one-line errors, and no noise that dalib itself causes.

Every expected failure is one line on stderr, ``dalib: error: ...``, and exit status 2.
``quiet_lightning`` drops the messages Lightning prints because of choices dalib made on the
user's behalf (they are not the user's to act on); every other warning stays visible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import NoReturn

# Lightning logs its info messages (tips, "GPU available", ...) through this logger.
LIGHTNING_LOGGER = "pytorch_lightning.utilities.rank_zero"
DROPPED_MESSAGES = (
    # Advertisements for Lightning's cloud packages, printed by every Trainer.
    "💡 Tip:",
    # dalib's module replaces the Trainer's default ModelCheckpoint on purpose.
    "The following callbacks returned in `LightningModule.configure_callbacks` will override",
)


def fail(message: str) -> NoReturn:
    """Print ``dalib: error: <message>`` as one line on stderr and exit with status 2."""
    print(f"dalib: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (with where to find help), exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see `{self.prog} --help`)")


class DropMessages(logging.Filter):
    """Drops log records whose message starts with or contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_lightning() -> None:
    """Silence what Lightning prints about dalib's own choices; idempotent."""
    logger = logging.getLogger(LIGHTNING_LOGGER)
    if not any(isinstance(f, DropMessages) for f in logger.filters):
        logger.addFilter(DropMessages(DROPPED_MESSAGES))
    # Lightning's CombinedLoader (which every Trainer wraps loaders in) calls a torch API that
    # torch >= 2.10 deprecated; nothing a dalib user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Data loaders run in the training process unless data.num_workers says otherwise: dalib's
    # default on purpose (the toy and feature datasets are tensors in memory).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
