"""``JBIMEngine``: torchreid engine for the JBIM losses (Eq. 3-11) and LR-probe / HR-gallery evaluation."""
import contextlib
import datetime
import os.path as osp
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchreid

from jbim_reid.engines import distributed
from jbim_reid.engines.checkpoints import CheckpointMixin
from jbim_reid.engines.losses import ClassificationLoss
from jbim_reid.evaluation.visualize import sr_images_from_model, visualize_cross_resolution_ranks

__all__ = ["JBIMEngine", "STAGES"]

STAGES = ("him", "lim", "joint")  # jbim.stage values the engine trains (the CLI adds 'all')

# loss term -> (feature stream, which pids) per branch; pids 'hr' or 'lr' side of the pair.
_HIM_STREAMS = (("hr", "hr"), ("h2l", "hr"), ("lr", "lr"))  # Eq. 3
_LIM_STREAMS = (("lr", "lr"), ("h2l", "hr"))  # Eq. 7
_FUS_STREAMS = (("lr", "lr"), ("hr", "hr"))  # Eq. 9


class JBIMEngine(CheckpointMixin, torchreid.engine.Engine):
    """Trains JBIM on cross-view (LR, HR) pairs and evaluates LR probes against HR galleries.

    Each batch item is a group (x^l, x^h) of one identity from two cameras (the train dataset's
    ``pair_views``, switched on here); the synthetic LR x^{h2l} is made from x^h by
    ``model.synthesize_lr`` on the fly. Loss per ``stage``:

    - ``him``: L_HIM = L_reid + alpha * L_sr (SR + HIM); L_sr is the mean squared error of
      F_sr(x^{h2l}) against x^h in [0, 1] RGB (Eq. 2).
    - ``lim``: L_LIM (LIM).
    - ``joint``: L_HIM + L_LIM + beta * L_fus (the terms the model's variant has).

    Every classification term is ``weight_x`` * CE (label smoothing) + ``weight_t`` * triplet.

    Args:
        datamanager: ``torchreid.data.ImageDataManager`` over a cross-resolution dataset.
        model (JBIM): the model.
        optimizer (Optimizer): optimizer over ``model``'s parameters.
        scheduler (LRScheduler, optional): None gives a constant schedule (torchreid's
            ``save_model`` needs one). Default is None.
        use_gpu (bool, optional): use CUDA when available. Default is False.
        alpha (float, optional): weight of L_sr. Default is 1.
        beta (float, optional): weight of L_fus. Default is 3.
        stage (str, optional): ``him``, ``lim`` or ``joint``. Default is ``joint``.
        label_smooth (bool, optional): label smoothing in the cross-entropy. Default is True.
        margin (float, optional): triplet margin. Default is 0.3.
        weight_t (float, optional): triplet weight in every L_cls. Default is 1.
        weight_x (float, optional): cross-entropy weight in every L_cls. Default is 1.
        synthetic_lr (bool, optional): HIM's synthetic LR stream and L_sr (False: the ablation of
            the paper's Table 7; LIM and the FFN keep their x^{h2l} streams). Default is True.
        cross_stream_triplet (bool, optional): an extension of the paper: mine one triplet over all
            streams of a branch together (HR, synthetic-LR and real-LR features of one batch in one
            pool), so that it pulls an LR feature towards the HR feature of the same person,
            weighted by the number of streams pooled (3 for HIM, 2 for LIM and the FFN) so that the
            triplet keeps the paper's total weight; cross-entropy stays per stream. False (the
            paper, Eq. 3/7/9): one L_cls = CE + triplet per stream, which never compares
            resolutions in the triplet. Default is False.
        sync_bn (bool, optional): under torchrun on GPUs, convert every BatchNorm to SyncBatchNorm
            (statistics over the global batch; ignored with a note on CPU). Default is False.
        dist_gather_triplet (bool, optional): under torchrun, mine each triplet over the features of
            all ranks (gradients through this rank's part) instead of this rank's batch alone.
            Default is False.
        amp (bool, optional): mixed-precision training on CUDA (autocast: bf16 where supported, else
            fp16 with a GradScaler); off on CPU. Default is False.
        test_amp (bool, optional): autocast for feature extraction on CUDA; off on CPU.
            Default is False.
        channels_last (bool, optional): channels-last memory format for the model and its inputs.
            Default is False.
        seed (int, optional): seed of the distributed train sampler (``seed + epoch`` each epoch, the
            same on every rank). Default is 1.

    Under ``torchrun`` (a process group set up by ``jbim_reid.engines.distributed.setup``) the model trains
    inside DistributedDataParallel, the train loader draws per-rank batches from
    ``DistributedIdentitySampler`` (global batch = batch size x world size), evaluation extracts
    features on every rank over disjoint shards and gathers them, and only rank 0 writes logs,
    TensorBoard scalars and checkpoints.

    Examples::
        >>> engine = JBIMEngine(datamanager, model, optimizer, scheduler=scheduler, stage='joint')
        >>> engine.run(save_dir='log/jbim', max_epoch=60)
        >>> engine.run(test_only=True, visrank=True, save_dir='log/jbim')
    """

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu: bool = False,
                 alpha: float = 1.0, beta: float = 3.0, stage: str = "joint",
                 label_smooth: bool = True, margin: float = 0.3, weight_t: float = 1.0,
                 weight_x: float = 1.0, synthetic_lr: bool = True, cross_stream_triplet: bool = False,
                 sync_bn: bool = False, dist_gather_triplet: bool = False, amp: bool = False,
                 test_amp: bool = False, channels_last: bool = False, seed: int = 1):
        super().__init__(datamanager, use_gpu)
        if stage not in STAGES:
            raise ValueError(f"Unknown jbim.stage '{stage}' for JBIMEngine; expected one of {list(STAGES)}")
        if alpha < 0 or beta < 0:
            raise ValueError(f"jbim.alpha ({alpha}) and jbim.beta ({beta}) must be >= 0")
        if scheduler is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.alpha, self.beta, self.stage, self.synthetic_lr = alpha, beta, stage, synthetic_lr
        self.cross_stream_triplet = cross_stream_triplet
        self.branches = self._branches(model, stage)
        self.criterion = ClassificationLoss(datamanager.num_train_pids, margin=margin,
                                            weight_t=weight_t, weight_x=weight_x,
                                            label_smooth=label_smooth, use_gpu=self.use_gpu)
        self.last_results: Dict[str, dict] = {}
        dataset = getattr(self.train_loader, "dataset", None)
        if not hasattr(dataset, "pair_views"):
            raise TypeError(f"JBIMEngine needs a cross-resolution train dataset with 'pair_views' "
                            f"(a jbim_reid.datasets.CrossResolutionDataset); got "
                            f"{type(dataset).__name__}")
        dataset.pair_views = True
        self.amp, self.test_amp, self.channels_last = amp, test_amp, channels_last
        self.dist_gather_triplet = dist_gather_triplet
        self.train_model = self._wrap_model(sync_bn)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and self._amp_dtype() == torch.float16)
        if distributed.is_distributed():
            self.train_loader = distributed.train_loader(self.train_loader, self._train_sampler(seed))
        if not distributed.is_main_process():
            self.writer = _NullWriter()  # Engine.run opens a SummaryWriter only when writer is None

    def _wrap_model(self, sync_bn: bool):
        """The module ``forward_backward`` calls: DistributedDataParallel around ``self.model`` under
        torchrun (``self.model`` stays the bare model, for saving and evaluation), else the model."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if not distributed.is_distributed():
            return self.model
        if sync_bn and self.use_gpu:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self._models["model"] = self.model
        elif sync_bn:
            print("=> train.sync_bn ignored: SyncBatchNorm needs CUDA (each rank keeps its BatchNorm)")
        # a stage trains only some branches and fixbase_epoch freezes layers: some parameters get
        # no gradient in a step
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[torch.cuda.current_device()] if self.use_gpu else None,
            find_unused_parameters=True)

    def _train_sampler(self, seed: int):
        sampler = self.train_loader.sampler
        name = type(sampler).__name__
        return distributed.build_train_sampler(
            self.train_loader.dataset.train, name, self.train_loader.batch_size,
            getattr(sampler, "num_instances", 1), seed)

    def _amp_dtype(self) -> Optional[torch.dtype]:
        """bf16 on CUDA devices that support it, else fp16; None (no autocast) on CPU."""
        if not self.use_gpu:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _autocast(self, enabled: bool):
        dtype = self._amp_dtype()
        if not enabled or dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_gpu:
            x = x.cuda(non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _metric(self, feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """Weighted triplet over ``feat (N, D)``; with ``dist_gather_triplet`` over every rank's rows.

        DistributedDataParallel averages gradients over ranks while each rank back-propagates the
        gathered loss through its own rows only, so the gradient is scaled by the world size (the
        value is unchanged) to equal a single process's gradient of the same global batch.
        """
        if not (self.dist_gather_triplet and distributed.is_distributed()):
            return self.criterion.metric(feat, pids)
        world = distributed.get_world_size()
        loss = self.criterion.metric(distributed.all_gather_with_local_grad(feat),
                                     distributed.all_gather_with_local_grad(pids))
        return loss * world - loss.detach() * (world - 1)

    def _step(self, loss: torch.Tensor) -> None:
        """Zero the gradients, back-propagate ``loss`` (scaled for fp16) and step the optimizer."""
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train(self, *args, **kwargs):
        """torchreid's epoch, after giving the distributed sampler this epoch's seed."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        return super().train(*args, **kwargs)

    @staticmethod
    def _branches(model, stage: str) -> tuple:
        if stage == "him":
            wanted = ("him",)
        elif stage == "lim":
            wanted = ("lim",)
        else:
            wanted = tuple(b for b, part in (("him", "him"), ("lim", "lim"), ("fusion", "fusion"))
                           if getattr(model, part, None) is not None)
        missing = [b for b in wanted if getattr(model, b, None) is None]
        if missing:
            raise ValueError(f"jbim.stage '{stage}' trains {missing}, which JBIM variant "
                             f"'{model.variant}' does not have")
        return wanted

    def _cls_terms(self, out: dict, branch: str, key: str, streams, pids: dict, summary: dict):
        """Sum of L_cls over ``streams`` of one branch; logs ``loss_<key>`` and ``acc_<key>``.

        With ``cross_stream_triplet`` the triplet is mined once over the streams' features
        concatenated and weighted by the number of streams pooled (the paper's total triplet
        weight); otherwise each stream gets its own CE + triplet (Eq. 3/7/9).
        """
        total = None
        feats, labels = [], []
        for stream, side in streams:
            name = f"{branch}_{stream}"
            if f"{name}_feat" not in out:
                continue
            feat, logits = out[f"{name}_feat"], out[f"{name}_logits"]
            if self.cross_stream_triplet:
                term = self.criterion.identity(logits, pids[side])
                feats.append(feat)
                labels.append(pids[side])
            else:
                term = self.criterion.identity(logits, pids[side]) + self._metric(feat, pids[side])
            total = term if total is None else total + term
            if stream == streams[0][0] and self.criterion.weight_x > 0:
                acc = torchreid.metrics.accuracy(logits, pids[side])[0]
                summary[f"acc_{key}"] = acc.item()
        if feats:
            total = total + len(feats) * self._metric(torch.cat(feats), torch.cat(labels))
        summary[f"loss_{key}"] = total.item()
        return total

    def forward_backward(self, data: dict) -> Dict[str, float]:
        """One optimisation step on a batch of (LR, HR) groups.

        Args:
            data (dict): batch with ``img_lr``, ``img_hr`` ``(B, 3, H, W)`` and ``pid`` ``(B,)``.

        Returns:
            dict: ``loss`` and each term computed (``loss_him_reid``, ``loss_sr``, ``loss_lim``,
            ``loss_fus``) with accuracies (``acc_him_reid``, ``acc_lim``, ``acc_fus``, and ``acc``:
            that of the fusion classifier, else HIM's, else LIM's; in %), as floats.
        """
        if "img_lr" not in data or "img_hr" not in data:
            raise KeyError("JBIMEngine batches need 'img_lr' and 'img_hr': the train dataset's "
                           "pair_views must be True")
        x_lr, x_hr, pid = data["img_lr"], data["img_hr"], data["pid"]
        x_lr, x_hr, pid = self._to_device(x_lr), self._to_device(x_hr), self._to_device(pid)
        pids = {"lr": pid, "hr": pid}  # a group shares one identity across its two views
        with self._autocast(self.amp):
            out = self.train_model(x_lr, x_hr, branches=self.branches,
                                   synthetic_lr=self.synthetic_lr, hw_hr=data.get("hw_hr"))
        out = {k: v.float() if torch.is_floating_point(v) else v for k, v in out.items()}
        summary, loss = {}, 0
        if "him" in self.branches:
            loss = loss + self._cls_terms(out, "him", "him_reid", _HIM_STREAMS, pids, summary)
            if self.alpha > 0 and "sr_h2l" in out:  # Eq. 2, in pixel space ([0, 1] RGB)
                to_pixels = self.model.pixels.to_pixels
                loss_sr = F.mse_loss(to_pixels(out["sr_h2l"]), to_pixels(x_hr))
                loss = loss + self.alpha * loss_sr
                summary["loss_sr"] = loss_sr.item()
        if "lim" in self.branches:
            loss = loss + self._cls_terms(out, "lim", "lim", _LIM_STREAMS, pids, summary)
        if "fusion" in self.branches and self.beta > 0:
            loss = loss + self.beta * self._cls_terms(out, "fus", "fus", _FUS_STREAMS, pids, summary)
        self._step(loss)
        summary["loss"] = loss.item()
        for key in ("acc_fus", "acc_him_reid", "acc_lim"):  # the stage's main classifier
            if key in summary:
                summary["acc"] = summary[key]
                break
        return distributed.mean_over_ranks(summary)

    def extract_features(self, input: torch.Tensor, role: str = "probe",
                         hw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, D)``: ``probe_features`` or ``gallery_features`` of the model
        (the gallery path shrinks each image by the model's ratio of its genuine size ``hw``)."""
        if role == "gallery":
            return self.model.gallery_features(input, hw)
        return self.model.probe_features(input)

    def _extract(self, loader, role: str, timer: torchreid.utils.AverageMeter):
        """Features, pids, camids and ``hw`` of every item of ``loader``, in order; under torchrun
        each rank extracts its own contiguous shard and the shards are gathered in rank order."""
        feats, pids, camids, hws = [], [], [], []
        for data in distributed.shard_loader(loader):
            imgs = self._to_device(data["img"])
            end = time.time()
            with self._autocast(self.test_amp):
                feat = self.extract_features(imgs, role=role, hw=data.get("hw"))
            feats.append(feat.float().cpu())
            timer.update(time.time() - end)
            pids.extend(data["pid"].tolist())
            camids.extend(data["camid"].tolist())
            if "hw" in data:
                hws.append(torch.as_tensor(data["hw"]).reshape(-1, 2))
        hw = torch.cat(hws).numpy() if hws and len(hws) == len(feats) else None
        feat = torch.cat(feats) if feats else torch.empty(0, self.model.feature_dim)
        gather = distributed.gather_rows
        return gather(feat), gather(np.asarray(pids)), gather(np.asarray(camids)), gather(hw)

    @torch.no_grad()
    def _evaluate(self, dataset_name: str = "", query_loader=None, gallery_loader=None,
                  dist_metric: str = "euclidean", normalize_feature: bool = False,
                  visrank: bool = False, visrank_topk: int = 10, save_dir: str = "",
                  use_metric_cuhk03: bool = False, ranks=(1, 5, 10, 20), rerank: bool = False):
        """Query (LR probes) through ``probe_features``, gallery (HR) through ``gallery_features``.

        Fills ``self.last_results[dataset_name]`` with ``distmat (Q, G)``, ``q_pids``, ``g_pids``,
        ``q_camids``, ``g_camids``, ``q_hw (Q, 2)``, ``g_hw (G, 2)`` (None when the dataset gives no
        ``hw``), ``cmc`` and ``mAP`` (fractions).

        Returns:
            tuple: ``(rank1, mAP)`` as fractions, like torchreid's ``Engine._evaluate``.
        """
        from jbim_reid.metrics import get_rank_evaluator  # metrics import nothing from engines

        timer = torchreid.utils.AverageMeter()
        print("Extracting features from query set (LR probes, the model's probe path) ...")
        qf, q_pids, q_camids, q_hw = self._extract(query_loader, "probe", timer)
        print(f"Done, obtained {qf.size(0)}-by-{qf.size(1)} matrix")
        print("Extracting features from gallery set (HR gallery, the model's gallery path) ...")
        gf, g_pids, g_camids, g_hw = self._extract(gallery_loader, "gallery", timer)
        print(f"Done, obtained {gf.size(0)}-by-{gf.size(1)} matrix")
        print(f"Speed: {timer.avg:.4f} sec/batch")
        if normalize_feature:
            qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
        distmat = torchreid.metrics.compute_distance_matrix(qf, gf, dist_metric)
        if rerank:
            distmat_qq = torchreid.metrics.compute_distance_matrix(qf, qf, dist_metric)
            distmat_gg = torchreid.metrics.compute_distance_matrix(gf, gf, dist_metric)
            distmat = torch.as_tensor(torchreid.utils.re_ranking(
                distmat.numpy(), distmat_qq.numpy(), distmat_gg.numpy()))
        distmat = distmat.numpy()
        evaluate_rank = get_rank_evaluator()
        cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                 max_rank=max(50, *ranks), use_metric_cuhk03=use_metric_cuhk03)
        print("** Results **")
        print(f"mAP: {mAP:.1%}")
        print("CMC curve")
        for r in ranks:
            if r <= len(cmc):
                print(f"Rank-{r:<3}: {cmc[r - 1]:.1%}")
        self.last_results[dataset_name] = dict(
            distmat=distmat, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids,
            q_hw=q_hw, g_hw=g_hw, cmc=np.asarray(cmc), mAP=float(mAP))
        # torchreid's ranked lists, each with the LR probe and its SR version in front (rank 0 only)
        if visrank and distributed.is_main_process():
            query, gallery = self.datamanager.fetch_test_loaders(dataset_name)
            visualize_cross_resolution_ranks(
                distmat, query, gallery,
                sr_images_from_model(self.model, device="cuda" if self.use_gpu else "cpu"),
                osp.join(save_dir, "visrank_" + dataset_name), width=self.datamanager.width,
                height=self.datamanager.height, topk=visrank_topk)
        return float(cmc[0]), float(mAP)

    def run(self, save_dir: str = "log", max_epoch: int = 0, start_epoch: int = 0, print_freq: int = 10,
            fixbase_epoch: int = 0, open_layers=None, start_eval: int = 0, eval_freq: int = -1,
            test_only: bool = False, dist_metric: str = "euclidean", normalize_feature: bool = False,
            visrank: bool = False, visrank_topk: int = 10, use_metric_cuhk03: bool = False,
            ranks: Sequence[int] = (1, 5, 10, 20), rerank: bool = False, checkpoint_freq: int = 1,
            keep_checkpoints: int = 2) -> None:
        """torchreid's ``Engine.run`` with crash-safe checkpoints.

        Differences: a checkpoint is written (atomically) after every ``checkpoint_freq`` epochs,
        after every periodic evaluation and after the last epoch (before the final test, so a kill
        during the test loses no training), and only the newest ``keep_checkpoints`` are kept.
        With ``start_epoch >= max_epoch`` (a finished stage being resumed) nothing trains and only
        the final test runs.

        Args:
            checkpoint_freq (int, optional): epochs between checkpoints; 0 = only the last epoch's
                (and those of evaluations). Default is 1.
            keep_checkpoints (int, optional): checkpoints kept in ``<save_dir>/model``, newest first;
                0 keeps all. Default is 2.
            others: as torchreid's ``Engine.run``.
        """
        if visrank and not test_only:
            raise ValueError("visrank can be set to True only if test_only=True")
        if checkpoint_freq < 0 or keep_checkpoints < 0:
            raise ValueError(f"checkpoint_freq ({checkpoint_freq}) and keep_checkpoints "
                             f"({keep_checkpoints}) must be >= 0")
        test_kwargs = dict(dist_metric=dist_metric, normalize_feature=normalize_feature, visrank=visrank,
                           visrank_topk=visrank_topk, save_dir=save_dir,
                           use_metric_cuhk03=use_metric_cuhk03, ranks=list(ranks))
        if test_only:
            self.test(**test_kwargs, rerank=rerank)
            return
        time_start = time.time()

        def periodic_test(done: int) -> Optional[float]:
            due = done >= start_eval and eval_freq > 0 and done % eval_freq == 0 and done != max_epoch
            return self.test(**test_kwargs) if due else None

        self.train_epochs(save_dir, max_epoch, start_epoch, checkpoint_freq, keep_checkpoints, periodic_test,
                          print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        if max_epoch > 0:
            print("=> Final test")
            self.test(**test_kwargs)
        print(f"Elapsed {datetime.timedelta(seconds=round(time.time() - time_start))}")
        if self.writer is not None:
            self.writer.close()

class _NullWriter:
    """Stands in for TensorBoard's ``SummaryWriter`` on ranks other than 0 (which write nothing)."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass
