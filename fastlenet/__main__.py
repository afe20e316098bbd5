"""``python -m fastlenet``: the same as the ``fastlenet`` command."""
import sys

from .cli import main

sys.exit(main())
