# SPDX-License-Identifier: MIT
"""shapebias: the toolkit's streaming metrics on numpy arrays, and its stores and streams.

Arrays are taken as they are: a wrong dtype raises TypeError and a non-contiguous array or a wrong
number of axes raises ValueError; nothing is converted or copied. See docs/python.md.
"""
from ._core import *  # noqa: F401,F403
from ._core import __version__  # noqa: F401
