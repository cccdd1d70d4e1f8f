"""The pruning engine: dependency groups (Torch-Pruning), importance criteria, plans, and
the layer surgery that applies them, plus saving and replaying a pruned model.

Import order (no cycles): ``surgery`` <- ``groups`` <- ``importance`` <- ``plan`` / ``prune``
<- ``pruned_io``.
"""
