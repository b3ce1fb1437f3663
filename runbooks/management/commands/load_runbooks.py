"""``manage.py load_runbooks [PATH ...] [--check]``: validate the runbook files and load new versions.

Every file is validated first; if any is broken, each problem is printed as ``path:line: reason`` and
nothing is loaded (exit status 1). ``--check`` validates only (no database needed).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runbooks.loader import library_files, parse_file


class Command(BaseCommand):
    help = "Validate runbook YAML files (default: runbooks/library) and load new versions into the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="*", help="files or folders (default: runbooks/library)")
        parser.add_argument("--check", action="store_true", help="validate only; write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        files = library_files(options["paths"])
        if not files:
            raise CommandError("no runbook files found")
        parsed = [parse_file(path) for path in files]
        problems = [problem for p in parsed for problem in p.problems]
        if problems:
            for problem in problems:
                self.stderr.write(str(problem))
            files_hit = len({p.path for p in problems})
            raise CommandError(f"{len(problems)} problem(s) in {files_hit} file(s); nothing loaded")
        if options["check"]:
            self.stdout.write(f"{len(parsed)} runbook file(s) valid")
            return
        from controlplane.audit.context import Channel, change_context
        from runbooks.services import runbooks_load

        with change_context(channel=Channel.SYSTEM, actor_name="manage.py load_runbooks"):
            report = runbooks_load(parsed=parsed)
        for line in report.lines():
            self.stdout.write(line)
