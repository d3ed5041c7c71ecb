import sys

from leukolens.cli import main

sys.exit(main())
