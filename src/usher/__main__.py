import sys

from usher.cli import main

sys.exit(main())
