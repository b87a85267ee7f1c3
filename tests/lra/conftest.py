"""Makes `fixtures` (the data writers shared by the tests here) importable under
--import-mode=importlib, which does not put test folders on sys.path."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
