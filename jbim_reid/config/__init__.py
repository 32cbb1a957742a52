"""yacs configuration of jbim-reid and adapters to constructor keyword arguments."""
from jbim_reid.config.defaults import get_default_config
from jbim_reid.config.kwargs import (engine_kwargs, engine_run_kwargs, folder_kwargs, imagedata_kwargs,
                                     lr_scheduler_kwargs, model_kwargs, optimizer_kwargs, protocol_kwargs)

__all__ = ["get_default_config", "imagedata_kwargs", "optimizer_kwargs", "lr_scheduler_kwargs",
           "engine_kwargs", "engine_run_kwargs", "model_kwargs", "protocol_kwargs", "folder_kwargs"]
