"""Loaded by the Python subprocesses that tests start (tests/conftest.py puts this
folder on PYTHONPATH): the same system-data guard as in the test process."""

import os
import sys

if os.environ.get("ICM_TEST_SYSTEM_DATA_GUARD") == "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import system_data_guard

    system_data_guard.install()
    system_data_guard.set_allowed(False)
