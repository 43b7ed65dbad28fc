"""``python -m firmware_sim run|truth|check``: the fleet commands without the rest of canalflow."""

import sys

from firmware_sim.cli import main

sys.exit(main())
