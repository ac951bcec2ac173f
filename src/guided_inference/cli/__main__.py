"""``python -m guided_inference.cli``: the ``guided`` command without the installed script."""
import sys

from . import main

sys.exit(main())
