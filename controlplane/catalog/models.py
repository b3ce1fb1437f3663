"""The catalog: where things live. Actions act only on catalog targets."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from django.db import models

key_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9._-]{0,199}$",
    "use lowercase letters, digits, '.', '_' and '-' (for example prod.weather.daily_weather_aggregates)",
)


class Environment(models.Model):
    """dev / qa / prod ... ``protected`` environments require a second person's approval for actions."""

    name = models.SlugField(max_length=40, unique=True)
    protected = models.BooleanField(default=False)
    description = models.TextField(blank=True)
    # Where this environment's incidents are posted in Slack when their pipeline names no channel.
    slack_channel = models.CharField(max_length=80, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Connection(models.Model):
    """How to reach one external system: ``kind`` picks the connector, ``config`` is its non-secret
    configuration (validated by the connector's config model) and ``secret_refs`` maps the connector's
    secret names to references (``env:NAME`` / ``file:/path``) resolved only when the connector is built.
    The secret values themselves are never stored."""

    name = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=40)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="connections")
    config = models.JSONField(default=dict, blank=True)
    secret_refs = models.JSONField(default=dict, blank=True)
    health_ok = models.BooleanField(null=True, blank=True)
    health_summary = models.CharField(max_length=500, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.environment.name})"

    def audit_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "environment": self.environment.name,
            "config": self.config,
            "secret_refs": self.secret_refs,
        }


class Source(models.Model):
    """A source system feeding the platform (POS, orders API, Open-Meteo ...)."""

    name = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    owner = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Pipeline(models.Model):
    """A scheduled unit of work: an Airflow DAG, a Snowflake task graph, a Prefect deployment ..."""

    class Layer(models.TextChoices):
        BRONZE = "bronze"
        SILVER = "silver"
        GOLD = "gold"
        MART = "mart"
        OTHER = "other"

    name = models.SlugField(max_length=120, unique=True)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="pipelines")
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="pipelines")
    layer = models.CharField(max_length=16, choices=Layer.choices, default=Layer.OTHER)
    description = models.TextField(blank=True)
    # The Slack channel for this pipeline's incidents (its environment's, then SLACK_DEFAULT_CHANNEL, if blank).
    slack_channel = models.CharField(max_length=80, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Target(models.Model):
    """The concrete thing a verb or check acts on: a materialized view, a table, a DAG, a pipe.

    ``key`` is stable and human-readable; bots and URLs use it. ``locator`` tells the connector where the
    object is (for Postgres ``{"schema": ..., "name": ...}``); identifiers composed into SQL come from here,
    never from request text.
    """

    key = models.CharField(max_length=200, unique=True, validators=[key_validator])
    kind = models.CharField(max_length=40)
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, related_name="targets")
    pipeline = models.ForeignKey(Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="targets")
    locator = models.JSONField(default=dict, blank=True)  # {} is a valid locator (a whole database)
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    @property
    def environment(self) -> Environment:
        return self.connection.environment

    def audit_state(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "connection": self.connection.name,
            "pipeline": self.pipeline.name if self.pipeline_id and self.pipeline else None,
            "locator": self.locator,
        }
