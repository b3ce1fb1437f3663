from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    name = "controlplane.audit"
    label = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from controlplane.audit import receivers

        post_migrate.connect(receivers.grant_app_role, sender=self, dispatch_uid="audit-grant-app-role")
        receivers.connect()
