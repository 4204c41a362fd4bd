import sys

from facemoment.tools.cli import main

sys.exit(main())
