"""The architecture registry (``registry``: ``Architecture``, ``ModelSpec``, ``build_model``, the
spec a checkpoint records), re-exported here, and the families that register themselves in it
(``seresnet``, ``iresnet``)."""

# Each family registers itself (the import order is the order errors list them in).
from crossres_dist.models.registry import (
    ARCHITECTURES,
    DEFAULT_ARCH,
    MEAN_BGR,
    Architecture,
    CosineClassifier,
    ModelSpec,
    NoClassifier,
    architecture,
    architectures_table,
    build_model,
    check_input,
    classifier_name,
    layers_of,
    register,
    set_bn_frozen,
    spec_of_state,
    unregister,
)
from crossres_dist.models.settings import spec_from_config

# Each family registers itself, in this order (the order errors list them in).
# isort: off
from crossres_dist.models import seresnet, iresnet, dlib_resnet  # noqa: E402, F401
# isort: on

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architectures_table",
    "CosineClassifier",
    "DEFAULT_ARCH",
    "MEAN_BGR",
    "ModelSpec",
    "NoClassifier",
    "architecture",
    "build_model",
    "check_input",
    "classifier_name",
    "layers_of",
    "register",
    "set_bn_frozen",
    "spec_from_config",
    "spec_of_state",
    "unregister",
]
