"""`python -m admin_scripts` runs the redesk command."""

import sys

from admin_scripts.cli import main

sys.exit(main())
