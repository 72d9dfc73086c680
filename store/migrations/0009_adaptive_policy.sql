-- The policy may also name `adaptive` (the default since the split-half evaluation; see
-- docs/policies.md): storing it explicitly was refused by the check.
ALTER TABLE ember_policies DROP CONSTRAINT IF EXISTS ember_policies_prewarm_check;
ALTER TABLE ember_policies ADD CONSTRAINT ember_policies_prewarm_check
    CHECK (prewarm IN ('fixed', 'histogram', 'histogram-cost', 'adaptive'));
