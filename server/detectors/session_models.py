"""The custom detector models a session names (``model_ids``): found, loaded and checked.

Checked before the session exists: each id must be a model of the caller's team (404 naming it
otherwise, as for any other team's model), distinct, and the models' artifact types must be
distinct from YAMNet's tags (``Others`` included) and from each other: a window's tags and the
event log name a type by itself, so a clash would make ``Speech`` mean two things (400 naming
the type). A model whose stored file is unusable is a 500 naming it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from protocol.errors import BadRequest, InternalError, NotFound
from server.detectors.live import DetectorModel
from server.detectors.loader import ModelLoader, ModelUnusable

__all__ = ["load_session_models"]


async def load_session_models(
    loader: ModelLoader | None, team: str, model_ids: Sequence[str], reserved: Collection[str]
) -> tuple[DetectorModel, ...]:
    """The session's models, ready to run; ``reserved``: names a custom type may not take."""
    if not model_ids:
        return ()
    if loader is None:
        raise BadRequest("model_ids: this server has no custom detector models")
    if len(set(model_ids)) != len(model_ids):
        raise BadRequest("model_ids: a model is named twice")
    models: list[DetectorModel] = []
    owner: dict[str, str] = {}
    for model_id in model_ids:
        try:
            loaded = await loader.load(team, model_id)
        except NotFound:
            raise NotFound(f"model_ids: no model with id {model_id!r}") from None
        except ModelUnusable as exc:
            raise InternalError(f"model_ids: model {model_id!r} cannot be used: {exc}") from None
        for name in loaded.runner.artifact_types:
            if name in reserved:
                raise BadRequest(
                    f"model_ids: model {model_id!r} reports {name!r}, which is a YAMNet tag; "
                    "custom types must not share a name with YAMNet's tags"
                )
            if name in owner:
                raise BadRequest(
                    f"model_ids: models {owner[name]!r} and {model_id!r} both report {name!r}"
                )
            owner[name] = model_id
        models.append(DetectorModel(model_id, loaded.runner))
    return tuple(models)
