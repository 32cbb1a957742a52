"""Default configuration (yacs) of jbim-reid.

Sections mirror torchreid's ``scripts/default_config.py`` (model, data, sampler, train, sgd, adam,
rmsprop, loss, test) with the same key names, plus ``mlr`` (the fields of
``jbim_reid.datasets.MLRProtocol``), ``folder`` (the options of ``crossres_folder``), ``jbim``
(the method's own options) and ``ensemble`` (the anchors of the multi-resolution ensemble,
``add_ensemble_config``). Keys are lowercase;
each has a comment giving its meaning, units and options.
"""
from yacs.config import CfgNode as CN


__all__ = ["get_default_config", "add_ensemble_config"]


def get_default_config() -> CN:
    """A fresh copy of the default configuration.

    Returns:
        CfgNode: the defaults; merge a YAML with ``cfg.merge_from_file`` and ``KEY VALUE`` pairs with
        ``cfg.merge_from_list``.
    """
    cfg = CN()
    # Use CUDA when it is available (as torchreid's scripts/main.py sets cfg.use_gpu).
    cfg.use_gpu = True

    # ---------------------------------------------------------------- model
    cfg.model = CN()
    # Backbone of both HIM and LIM: any torchreid model name (resnet50, osnet_x1_0, osnet_x0_25,
    # mobilenetv2_x1_0, ...). The JBIM model is built around it (builder "jbim_<name>").
    cfg.model.name = "resnet50"
    # ImageNet-initialised backbones, as torchreid: True without model.pretrained_path downloads the
    # backbone's ImageNet weights once into torchreid's cache (`jbim-reid weights list` shows where)
    # and stops with an error naming that path when it cannot; False = random backbones.
    cfg.model.pretrained = True
    # Local weights (ImageNet or re-id, .pth / .pth.tar) loaded into BOTH backbones instead of the
    # download; '' = none.
    cfg.model.pretrained_path = ""
    # A JBIM checkpoint whose matching weights are loaded before training / testing; '' = none.
    cfg.model.load_weights = ""
    # A JBIM checkpoint to resume a single jbim.stage from (model, optimizer, scheduler, epoch, random
    # state); '' = none (an interrupted run resumes by itself when re-run with the same options).
    cfg.model.resume = ""

    # ---------------------------------------------------------------- data
    cfg.data = CN()
    # Dataset type; only "image" is supported.
    cfg.data.type = "image"
    # Folder that holds the datasets (e.g. <root>/caviar/CAVIAR4REID).
    cfg.data.root = "reid-data"
    # Training dataset names (registered with torchreid): caviar, mlr_viper, mlr_prid, mlr_cuhk03,
    # mlr_market1501, mlr_sysu, crossres_folder (your own folder: see the folder node).
    cfg.data.sources = ["caviar"]
    # Test dataset names (LR query vs HR gallery).
    cfg.data.targets = ["caviar"]
    # Number of data-loading worker processes (0 = load in the main process).
    cfg.data.workers = 4
    # Index of the random split (small datasets average over 10 splits: 0..9).
    cfg.data.split_id = 0
    # Network input height in pixels (every image, LR or HR, is resized to height x width).
    cfg.data.height = 256
    # Network input width in pixels.
    cfg.data.width = 128
    # Combine train, query and gallery for training (torchreid option; keep False for JBIM).
    cfg.data.combineall = False
    # Training augmentations (torchreid names): random_flip, random_crop, random_patch,
    # color_jitter, random_erase; and the plugin's random_resolution (see resolution_aug_range).
    cfg.data.transforms = ["random_flip", "random_crop"]
    # random_resolution: bicubic down by a ratio drawn uniformly from [low, high] of the genuine
    # image size, then back up (0 < low <= high <= 1). Training only.
    cfg.data.resolution_aug_range = [0.25, 1.0]
    # Per-channel normalisation mean (RGB, images in [0, 1]).
    cfg.data.norm_mean = [0.485, 0.456, 0.406]
    # Per-channel normalisation std (RGB).
    cfg.data.norm_std = [0.229, 0.224, 0.225]
    # Output folder: logs, checkpoints (<save_dir>/model/), results.json, visrank_<dataset>/.
    cfg.data.save_dir = "log"
    # Unreadable train, query or gallery images (zero-byte, truncated, corrupt, not an image) stop the
    # command naming them; True skips them instead (counted per subset and listed in a warning).
    cfg.data.skip_bad_images = False

    # ---------------------------------------------------------------- sampler
    cfg.sampler = CN()
    # Train sampler (torchreid): RandomIdentitySampler gives P identities x K groups per batch;
    # RandomSampler, SequentialSampler also accepted.
    cfg.sampler.train_sampler = "RandomIdentitySampler"
    # K: (LR, HR) groups per identity in a batch (RandomIdentitySampler).
    cfg.sampler.num_instances = 4

    # ---------------------------------------------------------------- train
    cfg.train = CN()
    # Optimizer (torchreid.optim.build_optimizer): adam, amsgrad, sgd, rmsprop, radam.
    cfg.train.optim = "adam"
    # Initial learning rate.
    cfg.train.lr = 0.00035
    # L2 weight decay.
    cfg.train.weight_decay = 5e-4
    # Number of epochs per training stage.
    cfg.train.max_epoch = 60
    # First epoch (set by model.resume when resuming).
    cfg.train.start_epoch = 0
    # Batch size (groups per batch); a multiple of sampler.num_instances.
    cfg.train.batch_size = 32
    # Epochs (counted in max_epoch) during which only train.open_layers are trained; 0 = none.
    cfg.train.fixbase_epoch = 0
    # Module names trained during fixbase_epoch (e.g. fusion).
    cfg.train.open_layers = ["fusion"]
    # Staged learning rate (torchreid): modules not in new_layers train at lr * base_lr_mult.
    cfg.train.staged_lr = False
    # Top-level JBIM modules trained at the full lr when staged_lr is True (sr, him, lim, fusion).
    cfg.train.new_layers = ["him", "lim", "fusion"]
    # lr multiplier of the other modules (with the default new_layers: the SR module).
    cfg.train.base_lr_mult = 0.1
    # Learning-rate schedule (torchreid.optim.build_lr_scheduler): single_step, multi_step, cosine.
    cfg.train.lr_scheduler = "single_step"
    # Epochs at which the learning rate decays (one value for single_step).
    cfg.train.stepsize = [20]
    # Learning-rate decay factor.
    cfg.train.gamma = 0.1
    # Print training losses every print_freq batches.
    cfg.train.print_freq = 20
    # Random seed of torch / numpy / random (torchreid.utils.set_random_seed).
    cfg.train.seed = 1
    # -- crash safety and resume (re-running the same command continues an interrupted run)
    # Epochs between checkpoints <save_dir>/model/model.pth.tar-<epoch>, independent of
    # test.eval_freq; 0 = only after the last epoch (and after each periodic evaluation).
    cfg.train.checkpoint_freq = 1
    # Checkpoints kept per stage, newest first (the last one is the stage's final); 0 = keep all.
    cfg.train.keep_checkpoints = 2

    # ---------------------------------------------------------------- optimizers
    cfg.sgd = CN()
    # SGD momentum.
    cfg.sgd.momentum = 0.9
    # SGD dampening.
    cfg.sgd.dampening = 0.0
    # Nesterov momentum.
    cfg.sgd.nesterov = False
    cfg.rmsprop = CN()
    # RMSprop smoothing constant.
    cfg.rmsprop.alpha = 0.99
    cfg.adam = CN()
    # Adam beta1 (first moment decay).
    cfg.adam.beta1 = 0.9
    # Adam beta2 (second moment decay).
    cfg.adam.beta2 = 0.999

    # ---------------------------------------------------------------- loss
    cfg.loss = CN()
    # Loss recipe; JBIM always uses softmax + triplet per stream ("triplet" names that recipe).
    cfg.loss.name = "triplet"
    cfg.loss.softmax = CN()
    # Label smoothing in every identity cross-entropy.
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CN()
    # Triplet margin (hard mining, Euclidean distance).
    cfg.loss.triplet.margin = 0.3
    # Weight of the triplet term in every L_cls (0 = no triplet).
    cfg.loss.triplet.weight_t = 1.0
    # Weight of the cross-entropy term in every L_cls (0 = no cross-entropy).
    cfg.loss.triplet.weight_x = 1.0

    # ---------------------------------------------------------------- test
    cfg.test = CN()
    # Test batch size.
    cfg.test.batch_size = 100
    # Distance: euclidean (the paper) or cosine.
    cfg.test.dist_metric = "euclidean"
    # L2-normalise features before the distance.
    cfg.test.normalize_feature = False
    # CMC ranks printed and written to results.json.
    cfg.test.ranks = [1, 5, 10, 20]
    # Test only (the "train" command with test.evaluate True behaves like "test").
    cfg.test.evaluate = False
    # Evaluate every eval_freq epochs during training (-1 = only after the last epoch).
    cfg.test.eval_freq = -1
    # First epoch at which periodic evaluation may run.
    cfg.test.start_eval = 0
    # Re-ranking (Zhong et al. 2017) at test time.
    cfg.test.rerank = False
    # Save ranked lists as images (<save_dir>/visrank_<dataset>/); test only.
    cfg.test.visrank = False
    # Number of gallery images shown per query in visrank.
    cfg.test.visrank_topk = 10

    # ---------------------------------------------------------------- mlr (MLRProtocol)
    cfg.mlr = CN()
    # Split seed; a split is a function of (seed, data.split_id).
    cfg.mlr.seed = 0
    # Which images are LR: camera, random_camera (one drawn per split), per_id, camera_pair,
    # half_images; '' = the dataset's own.
    cfg.mlr.lr_mode = ""
    # The LR camera (0-based) when lr_mode is camera.
    cfg.mlr.lr_camid = 1
    # Downsampling ratios of the simulated LR images (one drawn at random).
    cfg.mlr.ratios = [1 / 2, 1 / 3, 1 / 4]
    # Draw the ratio per image or per id.
    cfg.mlr.ratio_per = "image"
    # Downsampling interpolation: bicubic, bilinear, area, nearest.
    cfg.mlr.interpolation = "bicubic"
    # Whether training images on the LR side are downsampled too.
    cfg.mlr.train_lr = True
    # Gallery: one_random HR image per test id (the paper) or all HR images.
    cfg.mlr.gallery = "one_random"
    # Random images kept per person per camera; 0 = all; -1 = the dataset's own (mlr_sysu: 3, else all).
    cfg.mlr.images_per_camera = -1
    # Train / test ids: random (drawn per split) or official (published split: mlr_cuhk03, mlr_market1501).
    cfg.mlr.id_split = "random"
    # LR image / split cache folder; '' = <data.root>/jbim_cache (per-user fallback).
    cfg.mlr.cache_dir = ""

    # ---------------------------------------------------------------- folder (crossres_folder)
    # Your own genuine cross-resolution data: <data.root>/<name>/{train,query,gallery}/ with files
    # <pid>_c<camid>_<anything>.<jpg|jpeg|png|bmp> (Market-1501 names; pid -1 = junk, skipped).
    # Query = the LR images of query/, gallery = the HR images of gallery/, train/ holds both.
    # Set exactly one of lr_cameras and lr_max_height.
    cfg.folder = CN()
    # The dataset's folder under data.root.
    cfg.folder.name = "custom"
    # Camera ids (the <camid> of the file names) whose images are the LR side; [] = unused.
    cfg.folder.lr_cameras = []
    # Images at most this many pixels tall are LR, whatever their camera; 0 = unused.
    cfg.folder.lr_max_height = 0
    # Query images whose id has no gallery image under another camera: True drops them (listed in a
    # warning), False stops with an error listing them.
    cfg.folder.drop_unmatched_query = True

    # ---------------------------------------------------------------- jbim
    cfg.jbim = CN()
    # Recipe: auto (measure the training split before stage sr and set jbim.cross_stream_triplet,
    # jbim.ratio and jbim.train_ratios from it: jbim_reid/training/recipe.py), paper (the paper's:
    # m = 1/2, per-stream triplets), custom (the keys as written). Keys given in the config file or on
    # the command line win over auto and paper; `jbim-reid recipe` prints the resolution.
    cfg.jbim.recipe = "auto"
    # A torchreid model checkpoint of the same backbone (model.pth.tar-N as torchreid's engines write
    # it, or its state_dict) initialising the HIM and LIM backbones (classifier dropped); '' = none.
    cfg.jbim.init_from = ""
    # Epochs per stage of jbim.stage all, e.g. {him: 6, lim: 6, joint: 12} (on the command line
    # "{'him': 0, 'joint': 12}"); a stage not named trains train.max_epoch; 0 skips it and carries its
    # initialisation through. Each stage's lr steps (train.stepsize) scale with its own epochs.
    # plain: N > 0 first trains the torchreid model (stage plain: ImageTripletEngine, random_resolution
    # added) whose checkpoint becomes jbim.init_from; absent or 0: no stage plain.
    cfg.jbim.stage_epochs = CN(new_allowed=True)
    # SR module, run on [0, 1] RGB (de-normalised by data.norm_mean/std): srcnn (9-5-5, predicts a
    # residual), srcnn_915 (9-1-5, cheaper, residual), srcnn_paper / srcnn_915_paper (the paper's
    # non-residual SRCNN: outputs the image), vdsr (20 layers, residual), espcn (convs at 1/4 of the
    # network size + sub-pixel upscaling, cheapest), bicubic (no learned SR).
    cfg.jbim.sr = "srcnn"
    # Local SR weights loaded into the SR module (the bare net's keys, or a stage-sr / JBIM
    # checkpoint's sr.* keys); '' = none. Stage sr starts from them too.
    cfg.jbim.sr_pretrained_path = ""
    # Local weights for the HIM backbone only (overrides model.pretrained_path); '' = none.
    cfg.jbim.him_pretrained_path = ""
    # Local weights for the LIM backbone only (overrides model.pretrained_path); '' = none.
    cfg.jbim.lim_pretrained_path = ""
    # alpha: weight of the SR loss in L_HIM = L_reid + alpha * L_sr (0 = SR trained by re-id only).
    cfg.jbim.alpha = 1.0
    # beta: weight of the fusion loss in L_overall = L_HIM + L_LIM + beta * L_fus.
    cfg.jbim.beta = 3.0
    # Ratio m of the anchor: of the gallery's LIM input down_m(x) and, unless train_ratios is set,
    # of the synthetic LR stream (1/2, 1/3 or 1/4).
    cfg.jbim.ratio = 0.5
    # Ratios of the synthetic LR stream in training (and in stage sr), one drawn per image, e.g.
    # [0.5, 0.3333333333333333, 0.25]; [] = [jbim.ratio].
    cfg.jbim.train_ratios = []
    # FFN output size; 0 = n_h + n_l (the paper).
    cfg.jbim.fusion_dim = 0
    # FFN dropout probability.
    cfg.jbim.dropout = 0.5
    # Training stage: sr (SR pre-training: F_sr alone on the training HR images, L_sr, early
    # stopping on held-out PSNR), him (SR + HIM), lim (LIM), joint (whole model), all (sr, him, lim,
    # then joint from their checkpoints with a fresh FFN, in <save_dir>/stage_{sr,him,lim,joint};
    # sr only for variants with an SR module and a learned jbim.sr).
    cfg.jbim.stage = "all"
    # Model: jbim (fused feature), him (HIM only), lim (LIM only), him_lim (HIM and LIM trained
    # independently, features concatenated).
    cfg.jbim.variant = "jbim"
    # HIM's synthetic-LR stream F_sr(x^h2l) and L_sr (False = the ablation of the paper's Table 7;
    # LIM and the FFN keep their synthetic-LR streams, as at test).
    cfg.jbim.synthetic_lr = True
    # Extension (not the paper): mine one triplet over all streams of a branch together (HR,
    # synthetic LR, real LR), so it compares resolutions, weighted by the number of streams pooled
    # (the paper's total triplet weight). False = the paper: one CE + triplet per stream.
    cfg.jbim.cross_stream_triplet = False
    # Stage-him checkpoint that initialises SR + HIM for stage joint; '' = none.
    cfg.jbim.him_checkpoint = ""
    # Stage-lim checkpoint that initialises LIM for stage joint; '' = none.
    cfg.jbim.lim_checkpoint = ""
    # Stage sr (SR pre-training): at most this many epochs (one epoch = one pass over the
    # training HR images that are not held out).
    cfg.jbim.sr_max_epoch = 100
    # Stage sr: stop after this many epochs without a higher held-out PSNR (>= 1).
    cfg.jbim.sr_patience = 10
    # Stage sr: fraction of the training HR images held out for PSNR (a fixed, seeded choice of
    # images, at least one), in (0, 1).
    cfg.jbim.sr_holdout = 0.1

    # ---------------------------------------------------------------- distributed / mixed precision
    # (jbim_reid/engines/distributed.py; effective under torchrun, ignored by a single process)
    # Process-group backend: nccl, gloo, or '' = nccl on GPU, gloo on CPU.
    cfg.train.dist_backend = ""
    # Seconds a rank waits on a collective before failing (a dead peer ends the job, no hang).
    cfg.train.dist_timeout = 600
    # Convert BatchNorm to SyncBatchNorm (statistics over the global batch; CUDA only).
    cfg.train.sync_bn = False
    # Mine triplets over the features of all ranks (gradients through the local part); False =
    # within each rank's batch.
    cfg.train.dist_gather_triplet = False
    # Mixed-precision training on CUDA: autocast (bf16 where supported, else fp16 + GradScaler);
    # off on CPU.
    cfg.train.amp = False
    # Channels-last memory format for the model and its inputs (faster convolutions on recent GPUs).
    cfg.train.channels_last = False
    # Autocast (as train.amp) for test-time feature extraction on CUDA; off on CPU.
    cfg.test.amp = False

    add_ensemble_config(cfg)
    return cfg


def add_ensemble_config(cfg: CN) -> CN:
    """Adds the ``ensemble`` node (options of ``train-anchors`` and ``ensemble``) to a yacs config.

    Does nothing when ``cfg`` already has it.

    Args:
        cfg (CfgNode): a config from ``jbim_reid.config.get_default_config``, not frozen.

    Returns:
        CfgNode: ``cfg``.
    """
    if "ensemble" in cfg:
        return cfg
    cfg.ensemble = CN()
    # Anchor ratios m_i, one JBIM model each (train-anchors sets jbim.ratio to each); floats in (0, 1].
    cfg.ensemble.anchors = [1 / 2, 1 / 3, 1 / 4]
    # Gaussian width sigma of the resolution weights w_i = exp(-(r - m_i)^2 / sigma^2).
    cfg.ensemble.sigma = 0.5
    # Weights of the fused distances: gaussian (resolution-adaptive), uniform (all 1) or both.
    cfg.ensemble.weighting = "both"
    # Anchor subsets evaluated: all (every non-empty subset, the paper's Table 13) or full (all
    # anchors together only); each anchor alone is always reported.
    cfg.ensemble.subsets = "all"
    # Split ids to train / evaluate; [] = 0..num_splits-1 of the target dataset (10 for every
    # dataset of jbim_reid; data.split_id for datasets without splits).
    cfg.ensemble.splits = []
    # Train the LIM stage once per split (its synthetic-LR stream at the first anchor's ratio) and
    # initialise every anchor's joint stage from it; False trains LIM per anchor.
    cfg.ensemble.share_lim = True
    # Write the CMC comparison plot <data.save_dir>/ensemble_cmc.png.
    cfg.ensemble.save_plots = True
    return cfg
