from django.apps import AppConfig


class OrmAppConfig(AppConfig):
    name = "tests.ormapp"
    label = "ormapp"
    default_auto_field = "django.db.models.BigAutoField"
