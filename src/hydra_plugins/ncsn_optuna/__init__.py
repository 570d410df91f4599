"""The Hydra sweeper of ``python train.py -m hparams_search=...`` (``ncsn.workflow.search``).

Hydra finds sweepers only in the ``hydra_plugins`` namespace package; this module holds the
class Hydra instantiates and nothing else (importing it imports no Optuna)."""

from hydra.plugins.sweeper import Sweeper

from ncsn.workflow.search import OptunaSearch


class NcsnOptunaSweeper(OptunaSearch, Sweeper):  # type: ignore[misc]  # config, launcher: set in setup
    """``hydra/sweeper=ncsn_optuna`` (conf/hydra/sweeper/ncsn_optuna.yaml)."""
