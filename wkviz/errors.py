"""Exceptions that carry one user-facing sentence.

Every error a user can cause (a bad file, a missing target, a request too big for memory) is raised as a
subclass of :class:`WkvizError`. The CLI prints ``error: <message>`` and exits non-zero; the app shows the
message in the page. Anything else escaping wkviz is a bug.
"""


class WkvizError(ValueError):
    """A problem with the user's input or request; the message says what is wrong and how to fix it."""


class InputError(WkvizError):
    """Structures, targets or files that cannot be used as given."""


class MemoryBudgetError(WkvizError):
    """A request whose memory (neighbour lists, densities, a tile's working set, the kernels) would not fit in the
    memory budget; refused before any work starts."""


class Cancelled(Exception):
    """Raised inside a long computation when its cancel flag was set."""
