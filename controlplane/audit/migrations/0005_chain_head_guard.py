"""The audit chain's head may only move forward to an event that exists with that hash.

Appending locks the head (SELECT ... FOR UPDATE, which needs UPDATE privilege) and moves it in the statement
that inserts the events, so the application's role holds UPDATE on the head. This trigger stops that role
from pointing the head anywhere else (back, to a made-up hash, to another id): it runs after the statement's
rows are in, so it sees the events inserted beside it in the same WITH statement. The head row is created
here, so the application's role never needs INSERT on it.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION audit_head_moves_forward() RETURNS trigger AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.seq <= OLD.seq OR NOT EXISTS (
        SELECT 1 FROM audit_auditevent WHERE seq = NEW.seq AND hash = NEW.hash
    ) THEN
        RAISE EXCEPTION 'the audit chain head only moves forward to an appended event: #% % refused', NEW.seq, NEW.hash
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_head_moves_forward
    AFTER UPDATE ON audit_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION audit_head_moves_forward();

INSERT INTO audit_auditchainhead (id, seq, hash) VALUES (1, 0, repeat('0', 64)) ON CONFLICT (id) DO NOTHING;
"""

DROP = """
DROP TRIGGER IF EXISTS audit_head_moves_forward ON audit_auditchainhead;
DROP FUNCTION IF EXISTS audit_head_moves_forward();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_actor_keeps_historical_id")]

    operations = [migrations.RunSQL([CREATE], [DROP])]
