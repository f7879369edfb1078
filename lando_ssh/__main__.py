import sys

from lando_ssh.cli import main

sys.exit(main())
