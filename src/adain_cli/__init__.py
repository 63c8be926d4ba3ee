"""adain-cli: arbitrary style transfer with Adaptive Instance Normalization (Huang & Belongie, 2017).

Library use::

    from adain_cli import Stylizer
    stylizer = Stylizer.from_files()            # weights from the weights directory
    out = stylizer.stylize(content_image, style_image, alpha=0.8)   # PIL in, PIL out

CONTRIBUTING.md maps the modules and the path of one stylization through them.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import AdainError, ImageError, OutputError, UsageError, WeightsError
from .execution import Execution
from .model import Decoder, Encoder, FeatureStats, adain, feature_stats
from .stylizer import EncodedContent, Stylizer

try:
    __version__ = version("adain-cli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AdainError",
    "Decoder",
    "EncodedContent",
    "Encoder",
    "Execution",
    "FeatureStats",
    "ImageError",
    "OutputError",
    "Stylizer",
    "UsageError",
    "WeightsError",
    "__version__",
    "adain",
    "feature_stats",
]
