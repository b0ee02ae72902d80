"""Suite-wide settings: hypothesis keeps its files out of the repository."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "cloudnic-hypothesis"))
