import sys

from qgadash.cli import main

sys.exit(main())
