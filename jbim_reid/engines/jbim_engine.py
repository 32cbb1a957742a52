"""``JBIMEngine``: torchreid engine for the JBIM losses (Eq. 3-11) and LR-probe / HR-gallery evaluation."""
import os.path as osp
import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchreid

from jbim_reid.engines.losses import ClassificationLoss
from jbim_reid.visualize import sr_images_from_model, visualize_cross_resolution_ranks

__all__ = ["JBIMEngine", "STAGES", "checkpoint_path"]

STAGES = ("him", "lim", "joint")  # jbim.stage values the engine trains (the CLI adds 'all')

# loss term -> (feature stream, which pids) per branch; pids 'hr' or 'lr' side of the pair.
_HIM_STREAMS = (("hr", "hr"), ("h2l", "hr"), ("lr", "lr"))  # Eq. 3
_LIM_STREAMS = (("lr", "lr"), ("h2l", "hr"))  # Eq. 7
_FUS_STREAMS = (("lr", "lr"), ("hr", "hr"))  # Eq. 9


def checkpoint_path(save_dir: str, epoch: int) -> str:
    """Where torchreid's ``save_checkpoint`` (through ``Engine.save_model``) leaves epoch ``epoch``'s
    checkpoint of the model registered as ``model``: ``<save_dir>/model/model.pth.tar-<epoch>``."""
    return osp.join(save_dir, "model", f"model.pth.tar-{epoch}")


class JBIMEngine(torchreid.engine.Engine):
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

    Examples::
        >>> engine = JBIMEngine(datamanager, model, optimizer, scheduler=scheduler, stage='joint')
        >>> engine.run(save_dir='log/jbim', max_epoch=60)
        >>> engine.run(test_only=True, visrank=True, save_dir='log/jbim')
    """

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu: bool = False,
                 alpha: float = 1.0, beta: float = 3.0, stage: str = "joint",
                 label_smooth: bool = True, margin: float = 0.3, weight_t: float = 1.0,
                 weight_x: float = 1.0, synthetic_lr: bool = True, cross_stream_triplet: bool = False):
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
                term = self.criterion(feat, logits, pids[side])["loss"]
            total = term if total is None else total + term
            if stream == streams[0][0] and self.criterion.weight_x > 0:
                acc = torchreid.metrics.accuracy(logits, pids[side])[0]
                summary[f"acc_{key}"] = acc.item()
        if feats:
            total = total + len(feats) * self.criterion.metric(torch.cat(feats), torch.cat(labels))
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
        if self.use_gpu:
            x_lr, x_hr, pid = x_lr.cuda(), x_hr.cuda(), pid.cuda()
        pids = {"lr": pid, "hr": pid}  # a group shares one identity across its two views
        out = self.model(x_lr, x_hr, branches=self.branches, synthetic_lr=self.synthetic_lr,
                         hw_hr=data.get("hw_hr"))
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
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        summary["loss"] = loss.item()
        for key in ("acc_fus", "acc_him_reid", "acc_lim"):  # the stage's main classifier
            if key in summary:
                summary["acc"] = summary[key]
                break
        return summary

    def extract_features(self, input: torch.Tensor, role: str = "probe",
                         hw: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, D)``: ``probe_features`` or ``gallery_features`` of the model
        (the gallery path shrinks each image by the model's ratio of its genuine size ``hw``)."""
        if role == "gallery":
            return self.model.gallery_features(input, hw)
        return self.model.probe_features(input)

    def _extract(self, loader, role: str, timer: torchreid.utils.AverageMeter):
        feats, pids, camids, hws = [], [], [], []
        for data in loader:
            imgs = data["img"].cuda() if self.use_gpu else data["img"]
            end = time.time()
            feats.append(self.extract_features(imgs, role=role, hw=data.get("hw")).cpu())
            timer.update(time.time() - end)
            pids.extend(data["pid"].tolist())
            camids.extend(data["camid"].tolist())
            if "hw" in data:
                hws.append(torch.as_tensor(data["hw"]).reshape(-1, 2))
        hw = torch.cat(hws).numpy() if hws and len(hws) == len(feats) else None
        return torch.cat(feats), np.asarray(pids), np.asarray(camids), hw

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
        print("Extracting features from query set (probe path: SR -> HIM, LIM) ...")
        qf, q_pids, q_camids, q_hw = self._extract(query_loader, "probe", timer)
        print(f"Done, obtained {qf.size(0)}-by-{qf.size(1)} matrix")
        print("Extracting features from gallery set (gallery path: HIM, LIM on downsampled) ...")
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
        if visrank:  # torchreid's ranked lists, each with the LR probe and its SR version in front
            query, gallery = self.datamanager.fetch_test_loaders(dataset_name)
            visualize_cross_resolution_ranks(
                distmat, query, gallery,
                sr_images_from_model(self.model, device="cuda" if self.use_gpu else "cpu"),
                osp.join(save_dir, "visrank_" + dataset_name), width=self.datamanager.width,
                height=self.datamanager.height, topk=visrank_topk)
        return float(cmc[0]), float(mAP)

    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        """torchreid's checkpoint (``<save_dir>/model/model.pth.tar-<epoch+1>``) plus ``jbim_kwargs``."""
        for name in self.get_model_names():
            model = self._models[name]
            torchreid.utils.save_checkpoint(
                {
                    "state_dict": model.state_dict(),
                    "epoch": epoch + 1,
                    "rank1": float(rank1),
                    "optimizer": self._optims[name].state_dict(),
                    "scheduler": self._scheds[name].state_dict(),
                    "jbim_kwargs": dict(getattr(model, "jbim_kwargs", {})),
                    "stage": self.stage,
                },
                osp.join(save_dir, name),
                is_best=is_best,
            )

    def resume(self, fpath: str) -> int:
        """Load model, optimizer and scheduler states from ``fpath``; returns the epoch to start at."""
        return torchreid.utils.resume_from_checkpoint(fpath, self.model, self.optimizer, self.scheduler)
