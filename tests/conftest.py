"""Test-session settings shared by every test file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# GRAM_CPU_PATH=auto records its timed choice (model/fast_path/cpu_path.py). The tests must neither read
# a record left in the home folder by an earlier run (a test of the timing would then see none) nor
# leave one there: each session records into its own folder, inherited by the servers it starts.
_RECORDS = Path(tempfile.mkdtemp(prefix="gram-test-cpu-path-"))
os.environ["GRAM_CPU_PATH_CACHE"] = str(_RECORDS / "cpu_path.json")
