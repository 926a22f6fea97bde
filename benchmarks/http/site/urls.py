"""URLs of the example site (see the package docstring for the table)."""

from __future__ import annotations

from django.urls import path

from benchmarks.http.site import views

urlpatterns = [
    path("health/", views.health, name="health"),
    path("slow/", views.slow, name="slow"),
    path("whoami/", views.whoami, name="whoami"),
    path("summary/", views.summary, name="summary"),
    path("items/<int:pk>/async-db/", views.item_async_db, name="item-async-db"),
    path("items/<int:pk>/native/", views.item_native, name="item-native"),
    path("items/<int:pk>/orm/", views.item_orm, name="item-orm"),
    path("items/<int:pk>/bump/async-db/", views.bump_async_db, name="bump-async-db"),
    path("items/<int:pk>/bump/native/", views.bump_native, name="bump-native"),
    path("items/<int:pk>/bump/orm/", views.bump_orm, name="bump-orm"),
]
