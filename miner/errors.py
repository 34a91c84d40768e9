"""The one exception type meant for users.

Anything a user can cause (a wrong path, a corrupt file, an unknown encoder) raises
``MinerError`` with a one-line message naming the file and what is wrong. The CLI
catches it once, prints the line and exits 2. Bugs raise normally.
"""


class MinerError(Exception):
    """A problem with the user's input or configuration, reported as one line."""
