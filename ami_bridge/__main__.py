import sys

from ami_bridge.cli import main

sys.exit(main())
