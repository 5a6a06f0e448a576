-- The request's W3C trace context (`traceparent`, `tracestate`), so its
-- delivery joins the request's trace on whichever replica runs it, and after
-- a restart. NULL for records made before it was kept, or with tracing off.
ALTER TABLE optech_requests
    ADD COLUMN IF NOT EXISTS traceparent TEXT,
    ADD COLUMN IF NOT EXISTS tracestate TEXT;
