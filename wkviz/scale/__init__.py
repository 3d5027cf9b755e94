"""Scale-out beside the flow: kernel tiles in a resumable on-disk store (:mod:`.store`) and as tasks on Dask
(:mod:`.distributed`); every tile is computed by the engine's own ``WignerKernel``."""
