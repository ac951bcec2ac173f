"""guided-inference: a small base model writes; at up to c moments a larger oracle takes over for k tokens."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("guided-inference")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"
