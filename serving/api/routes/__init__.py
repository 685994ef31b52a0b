"""Routers, one module per resource; :data:`API_ROUTERS` lists them for the app factory."""

from __future__ import annotations

from fastapi import APIRouter

from oncotriage.serving.api.routes.dicomweb import router as dicomweb_router
from oncotriage.serving.api.routes.dicomweb_retrieve import router as dicomweb_retrieve_router
from oncotriage.serving.api.routes.dicomweb_search import router as dicomweb_search_router
from oncotriage.serving.api.routes.figures import router as figures_router
from oncotriage.serving.api.routes.followups import router as followups_router
from oncotriage.serving.api.routes.hospitals import router as hospitals_router
from oncotriage.serving.api.routes.monitoring import router as monitoring_router
from oncotriage.serving.api.routes.ops import router as ops_router
from oncotriage.serving.api.routes.patients import router as patients_router
from oncotriage.serving.api.routes.referrals import router as referrals_router
from oncotriage.serving.api.routes.reviews import router as reviews_router
from oncotriage.serving.api.routes.studies import router as studies_router
from oncotriage.serving.api.routes.worklist import router as worklist_router

API_ROUTERS: tuple[APIRouter, ...] = (
    ops_router,
    dicomweb_router,
    dicomweb_search_router,
    dicomweb_retrieve_router,
    studies_router,
    worklist_router,
    reviews_router,
    referrals_router,
    patients_router,
    figures_router,
    followups_router,
    hospitals_router,
    monitoring_router,
)
