"""Running a training or an evaluation: setup and checks (`defaults`), the Trainer and
train_net.py's main (`train`), LazyConfig runs (`lazy`), process launch (`launch`), the lost-rank
watchdog (`watchdog`), preemption (`preemption`), atomic and best checkpoints (`checkpoint`) and
per-rank loss logging (`monitor`). Import the submodule you need (`detcommon.engine.train`);
only the setup API is re-exported here."""

from .defaults import check_amp_device, check_weights_for_eval, setup_run

__all__ = ["check_amp_device", "check_weights_for_eval", "setup_run"]
