"""Every served model at once: one :class:`ModelManager` per route, each following its alias.

``settings.models`` (``ONCOTRIAGE_MODELS``, parsed by
:func:`oncotriage.serving.routing.parse_models`) names the routes; ``settings.model_uri``
alone is the one-model shorthand (route ``default``). The worker asks
:meth:`ModelSet.for_image` for the model of each series it reads: the first route whose
model's intended inputs (``spec.reads``) fit, by the rule of :mod:`oncotriage.serving.routing`.
A series no model reads raises :class:`NoModelFitsError`, a permanent failure: the study is
``needs_manual_review`` at once with the reason, never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncotriage.serving.inference import (
    LoadedModel,
    ModelManager,
    ModelUnavailableError,
    RunnerFactory,
    demo_bundle_dir,
)
from oncotriage.serving.routing import Route, SeriesFacts, route_series
from oncotriage.serving.settings import Settings

if TYPE_CHECKING:
    from oncotriage.datasets.image import ImageVolume

__all__ = ["DEMO_BUNDLES", "ModelSet", "NoModelFitsError"]

logger = logging.getLogger(__name__)

#: Bundled demo models, by the registry name they are registered under on first run.
DEMO_BUNDLES = {"oncotriage-cxr2d": "demo", "oncotriage-ct3d": "demo_ct"}


class NoModelFitsError(Exception):
    """No served model reads this series (a permanent failure: the study goes to a human)."""


class ModelSet:
    """Every served model, one :class:`ModelManager` per route, each following its own alias.

    It offers the single manager's interface (:meth:`current` is the first route's model,
    :meth:`refresh`, polling, ``last_error``) so one-model callers keep working, and
    :meth:`for_image` picks the model for a series.

    Args:
        managers: route name -> manager, in routing order.
    """

    def __init__(self, managers: Mapping[str, ModelManager]) -> None:
        if not managers:
            raise ValueError("a model set needs at least one model")
        self.managers = dict(managers)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        runner_factory: RunnerFactory | None = None,
        *,
        model_threads: int | None = None,
    ) -> ModelSet:
        """One manager per ``settings.model_routes`` entry; a route whose registry name is a
        bundled demo model's registers that bundle on first run."""
        from oncotriage.models import registry

        managers: dict[str, ModelManager] = {}
        for name, uri in settings.model_routes.items():
            demo: Path | None = None
            if settings.models:  # several routes: each its own demo bundle, if bundled
                parsed = registry.parse_model_uri(uri)
                dirname = DEMO_BUNDLES.get(parsed.name or "")
                demo = demo_bundle_dir(dirname) if dirname else None
            managers[name] = ModelManager(
                settings, runner_factory, model_threads=model_threads, uri=uri, demo_bundle=demo
            )
        return cls(managers)

    @classmethod
    def of(cls, models: ModelManager | ModelSet) -> ModelSet:
        return models if isinstance(models, ModelSet) else cls({"default": models})

    # -- the one-model interface ------------------------------------------------------------

    @property
    def first(self) -> ModelManager:
        return next(iter(self.managers.values()))

    def current(self) -> LoadedModel:
        """The first route's model (loading it on first use)."""
        return self.first.current()

    @property
    def loaded(self) -> LoadedModel | None:
        return self.first.loaded

    @property
    def last_error(self) -> str | None:
        errors = [f"{n}: {m.last_error}" for n, m in self.managers.items() if m.last_error]
        return "; ".join(errors) or None

    def refresh(self) -> bool:
        """Refresh every route; raises the first route's error after trying them all."""
        changed = False
        first_error: ModelUnavailableError | None = None
        for manager in self.managers.values():
            try:
                changed = manager.refresh() or changed
            except ModelUnavailableError as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error
        return changed

    def start_polling(self) -> None:
        for manager in self.managers.values():
            manager.start_polling()

    def stop(self) -> None:
        for manager in self.managers.values():
            manager.stop()

    # -- routing ----------------------------------------------------------------------------

    def for_image(self, image: ImageVolume, header: Any | None = None) -> LoadedModel:
        """The model of the first route whose intended use fits the series: the one rule,
        :func:`oncotriage.serving.routing.route_series`, on the decoded image and
        ``header`` (one instance's dataset: body part, view, slice thickness, kernel).

        A route whose model cannot be loaded (an outage, a version with placeholder
        thresholds) holds back only the series that might be its own: a series goes ahead
        when a loaded route *before* it in order takes it, and waits otherwise.

        Raises:
            NoModelFitsError: no route's model reads the series: "no model for MG (the
                service reads ...)" when none takes its modality, else why each model of
                that modality refused it.
            ModelUnavailableError: a route's model that might take the series cannot be
                loaded (the job waits).
        """
        names = list(self.managers)
        loaded: dict[str, LoadedModel] = {}
        down: dict[str, ModelUnavailableError] = {}
        for name, manager in self.managers.items():
            try:
                loaded[name] = manager.current()
            except ModelUnavailableError as error:
                down[name] = error
        routes = [
            Route.for_spec(name, self.managers[name].uri, model.spec)
            for name, model in loaded.items()
        ]
        decision = route_series(SeriesFacts.from_image(image, header), routes)
        if down:
            first_down = min(names.index(name) for name in down)
            if decision.route is None or names.index(decision.route.name) > first_down:
                raise down[names[first_down]]  # the series may be that route's: it waits
        if decision.route is None:
            raise NoModelFitsError(decision.reason)
        return loaded[decision.route.name]

    def any_loaded(self) -> bool:
        """Whether some route's model loads (loading each on first use); the workers claim
        jobs while one does (:meth:`for_image` holds back what waits for another)."""
        if any(manager.loaded is not None for manager in self.managers.values()):
            return True
        for manager in self.managers.values():
            try:
                manager.current()
            except ModelUnavailableError:
                continue
            return True
        return False
