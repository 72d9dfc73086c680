-- The audit trail names what an action was about when its path does not: the function a
-- deploy made, the key a creation made (never a secret's value: only names and ids).
ALTER TABLE ember_audit ADD COLUMN subject text NOT NULL DEFAULT '';
