"""Hook specifications: the whole plugin interface of emozoo.

A plugin is a module (or object) with functions marked ``@emozoo.hookimpl`` whose names match the
specs below, published under the ``emozoo`` entry-point group::

    [project.entry-points.emozoo]
    my_plugin = "my_package.plugin"

Every ``register_*`` hook receives a ``register`` callback instead of returning a list, so the
registry knows which plugin supplied each name and can refuse duplicates naming both owners.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("emozoo")
hookimpl = pluggy.HookimplMarker("emozoo")


@hookspec
def register_backbones(register):
    """Register ensemble members (backbones).

    Call ``register(name, factory, description=None)`` once per backbone. ``factory`` is called as
    ``factory(num_classes=..., in_chans=..., **kwargs)`` and must return an ``nn.Module`` with:

    - ``forward(x) -> logits`` of shape ``(B, num_classes)`` for input ``(B, in_chans, H, W)``,
    - ``forward_features(x) -> (B, num_features)`` pooled features,
    - ``forward_head(features) -> logits`` and an int attribute ``num_features``.

    :class:`emozoo.BackboneBase` provides ``forward`` from the other two.

    Keyword arguments after ``description`` are the backbone's :class:`emozoo.ArchitectureCfg` fields
    (or ``cfg=ArchitectureCfg(...)``), e.g. ``pretrained={"ferplus": emozoo.PretrainedCfg(...)}`` to
    publish weights under ``name.ferplus``. A backbone is also a model: ``emozoo.create(name)``.
    """


@hookspec
def register_architectures(register):
    """Register model architectures that are not ensemble members, such as EmoXNet and EmoXNetLite.

    Call ``register(name, factory, description=None, cfg=ArchitectureCfg(...))`` (or the cfg's
    fields as keyword arguments). ``factory(num_classes=..., in_chans=..., **model_args)`` returns
    the ``nn.Module``; the cfg declares the rest, as timm's ``default_cfgs`` do: default input and
    labels, whether it takes test-time flip, how its arguments are normalised, how a model card
    describes it, and its published weights (``pretrained={tag: PretrainedCfg(...)}``). Architectures
    and backbones share one namespace.
    """


@hookspec
def register_fusions(register):
    """Register fusion strategies that combine the members of an EmoXNet.

    Call ``register(name, factory, description=None)``. ``factory(num_members, num_classes,
    feature_dims, **kwargs)`` returns an ``nn.Module`` whose ``forward(logits, features)`` takes the
    members' logits stacked as ``(M, B, C)`` and their pooled features as a list of ``(B, F_i)``
    tensors, and returns fused logits ``(B, C)``: ``softmax`` of them is the ensemble's probability.
    A fusion with parameters that must be fitted sets ``trainable = True``.
    """


@hookspec
def register_distill_losses(register):
    """Register knowledge-distillation losses.

    Call ``register(name, factory, description=None)``. ``factory(**kwargs)`` returns an
    ``nn.Module`` whose ``forward(student_logits, teacher_logits, target)`` returns a scalar loss;
    ``target`` holds class indices ``(B,)`` or a label distribution ``(B, C)``.
    """


@hookspec
def register_face_detectors(register):
    """Register face detectors for :func:`emozoo.predict`.

    Call ``register(name, factory, description=None)``. ``factory(**options)`` returns a detector: an
    object whose ``detect(image)`` takes one RGB ``uint8`` array ``(H, W, 3)`` and returns a list of
    :class:`emozoo.Face`, best first: ``box`` ``(x0, y0, x1, y1)`` in pixels of that image, ``score``
    in [0, 1] and optional ``keypoints`` ``((x, y), ...)``. No face is an empty list. Import heavy
    dependencies inside the factory, so loading the plugin stays cheap.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``emozoo`` command line; ``cli`` is the root ``click.Group``."""


@hookspec
def register_datasets(register):
    """Register dataset readers, so that ``--data NAME:PATH`` and ``open_dataset("NAME:PATH", split)`` open them.

    Call ``register(name, factory, description=None, **meta)``. For the spec ``NAME:LOCATION``,
    ``LOCATION`` is split at commas and ``factory(*locations, split=split, **kwargs)`` is called, with
    ``kwargs`` such as ``transform=`` and ``label_names=`` (and ``target="soft"`` for readers with vote
    distributions; a reader without them raises ``TypeError`` and is used with hard labels). It returns
    a ``torch.utils.data.Dataset`` of ``(image, target)`` pairs with the attributes ``label_names``,
    ``targets`` and ``transform`` (subclass :class:`emozoo.data.FaceDataset` to get them), and raises
    :class:`emozoo.DataError` naming the file for unreadable data. ``extensions=(".xyz",)`` in ``meta``
    lets a bare path with that suffix (no ``NAME:``) pick this reader.
    """
