"""Training a detector: the per-worker steps (``steps``, ``dev``) and the driver's final model (``final``).

Plain functions over a :class:`spoofdet.config.TrainJobConfig`; ``ray_jobs/train.py`` runs them
under Ray Train (the per-worker loop, checkpoints and reports stay in that job).
"""
