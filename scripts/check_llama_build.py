"""Exit 0 when the installed llama-cpp-python was built for GUIDED_CPU_BUILD, else 1 with
one line per problem. Runs from a source tree before the package is installed."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from guided_inference import buildinfo  # noqa: E402

quiet = "--quiet" in sys.argv
try:
    info = buildinfo.system_info()
except ImportError as e:
    if not quiet:
        print(f"llama-cpp-python is not installed: {e}", file=sys.stderr)
    sys.exit(1)
problems = buildinfo.build_problems(info, buildinfo.current_variant())
if problems:
    if not quiet:
        print(f"llama-cpp-python is not the {buildinfo.current_variant()} build: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
if not quiet:
    print(f"llama-cpp-python: {buildinfo.current_variant()} build ({info.strip()})")
