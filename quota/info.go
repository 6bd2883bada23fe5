package quota

// Shared reports whether the limits are shared through Redis.
func (e *Enforcer) Shared() bool { return e.shared != nil }

// Listed reports whether the policy is a workflow's own (config or admin
// API), not the default that applies to any id a client sends.
func (p *Policy) Listed() bool { return p.listed }
