import sys

from facemoment.tools.review.launch import child_main

sys.exit(child_main())
