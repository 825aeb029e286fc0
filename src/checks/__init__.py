"""Check a composed config before any data is read or any model is built: one line per error.

    $ python -m src.train experiment=smoke optim.lr=-1
    config error: optim.lr=-1.0: expected a finite number >= 0
    $ echo $?
    2

:func:`validate` walks every group of a composed config (``src.train``'s, and the keys of
``src.eval``, ``src.export`` and ``src.generate``) and raises :class:`ConfigError` (key, value
given, what is accepted). It reuses the checks the schemas already run in ``__post_init__``
(``AWDLSTMConfig`` with its ``MLSTMOptions``, ``QuantConfig``) and the data module's
constructor checks, by building them from the config; the rules below cover the rest
(optimizer, loss, trainer, loggers, callbacks, paths, top-level keys, the other entry points).

Hydra's own composition errors (an unknown key or option, a wrong type, an unparsable
override) are raised inside ``@hydra.main``; :func:`one_line_config_errors`, wrapped around
``main()`` under ``if __name__ == "__main__"``, prints them and :class:`ConfigError` as the same
one line (to stderr) and exits with status 2. ``HYDRA_FULL_ERROR=1`` keeps the traceback.

What depends on the machine is checked next (:mod:`.machine`: the accelerator is present, the
corpus folder is there or downloadable, checkpoint files are checkpoints, via :mod:`.files`);
once the corpus is read, :mod:`.memory` refuses windows that cannot fit, with the estimate.
Entry points read checkpoints with :func:`load_checkpoint` (a one-line error, not torch's).
"""

from .errors import EXIT_CODE, ConfigError
from .files import load_checkpoint
from .hydra_errors import (
    check_config,
    exit_on_config_error,
    from_hydra,
    one_line_config_errors,
    report,
)
from .machine import check_machine
from .memory import check_eval_data, check_train_sizes
from .validate import problems, validate

__all__ = [
    "EXIT_CODE",
    "ConfigError",
    "check_config",
    "check_eval_data",
    "check_machine",
    "check_train_sizes",
    "exit_on_config_error",
    "from_hydra",
    "load_checkpoint",
    "one_line_config_errors",
    "problems",
    "report",
    "validate",
]
