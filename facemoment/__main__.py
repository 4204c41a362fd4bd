import sys

from facemoment.cli import main

sys.exit(main())
