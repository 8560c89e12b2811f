"""The LAVT-style RES model: timm backbone, transformers text encoder, pixel-word attention
fusion with language gates, top-down decoder; a registry of named configs and a builder.

See docs/model.md.
"""

from semires.model.config import ModelConfig
from semires.model.lavt import RESModel
from semires.model.registry import (
    MODEL_CONFIGS,
    build_model,
    get_model_config,
    list_models,
    register_model,
)

__all__ = [
    "MODEL_CONFIGS",
    "ModelConfig",
    "RESModel",
    "build_model",
    "get_model_config",
    "list_models",
    "register_model",
]
