"""Quarantine reviews: weekly review records over the quarantine connector's figures, dispositions that act
through the action service, and the incidents that threshold breaches open (seed 003, section 5)."""
