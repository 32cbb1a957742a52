"""``PlainTripletEngine``: torchreid's ``ImageTripletEngine`` with ``JBIMEngine``'s crash-safe checkpoints,
for stage ``plain`` (the torchreid model a warm-started JBIM starts from).

Its training step is torchreid's own (softmax + triplet on one image per item); only the epoch loop
differs, so that a killed run loses at most an epoch: torchreid's ``Engine.run`` writes a checkpoint
only when it tests.
"""
import datetime
import time

import torchreid
from torch.utils.tensorboard import SummaryWriter

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
        if checkpoint_freq < 0 or keep_checkpoints < 0:
            raise ValueError(f"checkpoint_freq ({checkpoint_freq}) and keep_checkpoints "
                             f"({keep_checkpoints}) must be >= 0")
        self.keep_checkpoints = keep_checkpoints
        if self.writer is None:
            self.writer = SummaryWriter(log_dir=save_dir)
        time_start = time.time()
        self.start_epoch, self.max_epoch = start_epoch, max_epoch
        print("=> Start training")
        for self.epoch in range(start_epoch, max_epoch):
            self.train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
            done = self.epoch + 1
            if done == max_epoch or (checkpoint_freq > 0 and done % checkpoint_freq == 0):
                self.save_model(self.epoch, None, save_dir)
        print(f"Elapsed {datetime.timedelta(seconds=round(time.time() - time_start))}")
        self.writer.close()
