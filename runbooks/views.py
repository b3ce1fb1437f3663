"""Runbook pages (being written: the library, starting a run, the guided run page)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def runbook_list(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def runbook_detail(request: HttpRequest, slug: str) -> HttpResponse:
    raise NotImplementedError


def run_new(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    raise NotImplementedError


def step_command(request: HttpRequest, run_id: int, step_id: str, command: str) -> HttpResponse:
    raise NotImplementedError
