"""Fuzz targets for tympan's input parsers, and the tools that run and replay them.

``targets`` holds one function per parser family: it feeds fuzz bytes to the parser, swallows
the exceptions the parser documents, and lets anything else (a crash) escape. ``seeds`` builds
the starting corpora from real encoder output, ``run`` drives a target with atheris
(``python -m tests.fuzz.run TARGET --runs N --max-seconds S``), and ``regressions/`` keeps the
inputs that once crashed or hung a target, replayed by ``tests/test_fuzz_regressions.py``.
"""
