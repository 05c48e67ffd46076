"""The build's stages, in pipeline order: sources, hold-out and leak check (splits), attacks,
defense, recovery, evaluation sets and pretrain noise. Each declares the artifacts it reads and
produces (:mod:`mbdata.artifacts`); :func:`mbdata.build.pipeline` assembles them."""
