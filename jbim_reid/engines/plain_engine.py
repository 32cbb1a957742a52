"""``PlainTripletEngine``: torchreid's ``ImageTripletEngine`` with ``JBIMEngine``'s crash-safe checkpoints,
for stage ``plain`` (the torchreid model a warm-started JBIM starts from).

Its training step is torchreid's own (softmax + triplet on one image per item); only the epoch loop
differs, so that a killed run loses at most an epoch: torchreid's ``Engine.run`` writes a checkpoint
only when it tests.
"""
import datetime
import time

import torchreid

from jbim_reid.engines.checkpoints import CheckpointMixin

__all__ = ["PlainTripletEngine"]


class PlainTripletEngine(CheckpointMixin, torchreid.engine.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` whose ``run`` trains only, writing a checkpoint (atomically, with
    the random state) after every ``checkpoint_freq`` epochs and the last one; ``resume`` continues it
    bit for bit. Testing is left to the caller (stage ``plain`` tests through ``JBIMEngine``).

    Examples::
        >>> engine = PlainTripletEngine(datamanager, model, optimizer, scheduler=scheduler)
        >>> engine.run(save_dir='log/stage_plain', max_epoch=27)
    """

    stage = "plain"  # recorded in its checkpoints; resume refuses another stage's

    def run(self, save_dir: str = "log", max_epoch: int = 0, start_epoch: int = 0, print_freq: int = 10,
            fixbase_epoch: int = 0, open_layers=None, checkpoint_freq: int = 1, keep_checkpoints: int = 2,
            **_: object) -> None:
        """Train epochs ``start_epoch`` .. ``max_epoch - 1``; other keyword arguments of torchreid's
        ``Engine.run`` (the test's) are accepted and ignored.

        Args:
            checkpoint_freq (int, optional): epochs between checkpoints; 0 = only the last epoch's.
            keep_checkpoints (int, optional): checkpoints kept, newest first; 0 keeps all.
        """
        time_start = time.time()
        self.train_epochs(save_dir, max_epoch, start_epoch, checkpoint_freq, keep_checkpoints,
                          print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        print(f"Elapsed {datetime.timedelta(seconds=round(time.time() - time_start))}")
        self.writer.close()
