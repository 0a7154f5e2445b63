"""icm — image coding for machines.

Learned image codecs whose bitstreams machines analyse directly.  ``import icm``
stays light: Lightning, plotting and the classical anchor codecs load only when
a command that needs them runs.
"""

from .errors import BitstreamError, IcmError
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["BitstreamError", "IcmError", "create_model", "list_models", "__version__"]
