from __future__ import annotations

from django.urls import path

from benchmarks.http.auth_site import views

urlpatterns = [
    path("health/", views.health),
    path("books/", views.books),
]
