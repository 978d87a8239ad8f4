"""``python -m train --data DIR ...``: see ``python -m train --help``."""

import logging

from train.config import parse_config
from train.loop import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_config())
