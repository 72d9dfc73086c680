-- Handler styles (docs/migrating.md): the platform a function was written for, and that
-- style's settings (e.g. lambda's event format). Existing versions are Ember-style.
ALTER TABLE ember_versions ADD COLUMN style text NOT NULL DEFAULT 'ember';
ALTER TABLE ember_versions ADD COLUMN style_options jsonb NOT NULL DEFAULT '{}'::jsonb;
