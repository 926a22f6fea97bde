from django.urls import path

from tests.auth_site import views

urlpatterns = [
    path("login/", views.login),
    path("logout/", views.logout),
    path("me/", views.me),
    path("stats/", views.stats),
]
