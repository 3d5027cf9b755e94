"""Structures in, validated; targets described; splits; the bundled sample data.

Everything a user can get wrong about their data is caught here and raised as one
:class:`~wkviz.errors.InputError` whose message has one sentence per problem, naming the structure
(numbered from 0, as in Python and in every CSV wkviz writes) and, for text files, the line (numbered
from 1, as editors show it). Nothing here unpickles or evaluates user data: files are parsed by ase's
readers, and the old pickle-based ase trajectory format is refused.

Units follow ase: lengths Å, energies eV, forces eV/Å, stresses eV/Å³, charges e.

Modules, in the order the data flows through them: :mod:`.io` (reading files safely), :mod:`.validate`
(physical checks), :mod:`.targets` (what can be learned, and its values), :mod:`.splits` (train/test splits and
farthest-point sampling), :mod:`.samples` (the bundled data sets and QM9). Their public names are all here.
"""

from .io import *  # noqa: F401,F403
from .io import __all__ as _io
from .samples import *  # noqa: F401,F403
from .samples import __all__ as _samples
from .splits import *  # noqa: F401,F403
from .splits import __all__ as _splits
from .targets import *  # noqa: F401,F403
from .targets import __all__ as _targets
from .validate import *  # noqa: F401,F403
from .validate import __all__ as _validate

__all__ = [*_io, *_validate, *_targets, *_splits, *_samples]
