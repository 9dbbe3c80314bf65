"""`python -m tpsim.cli ...`: the tpsim command without its installed entry point."""

import sys

from tpsim.cli import main

sys.exit(main())
