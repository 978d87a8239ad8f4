"""``python -m train --data DIR ...`` (or ``torchrun --nproc_per_node=N -m train ...``); see ``--help``."""

import logging
import os

from train.config import parse_config
from train.data import PairingError
from train.loop import main

if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun; only rank 0 reports progress
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
        force=True,  # importing mlflow.pytorch installs an ERROR-level root handler
    )
    try:
        main(parse_config())
    except PairingError as exc:
        raise SystemExit(f"data error: {exc}") from None  # nothing was trained; the message names the files
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # the resumable checkpoint is already written
