"""Priority policies and next-lead decisions (built by the engine issue)."""
