import sys

from .cli import main

# Guarded: the worker processes of the first scan are spawned and import this module again.
if __name__ == "__main__":
    sys.exit(main())
