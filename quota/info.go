package quota

// Shared reports whether the limits are shared through Redis.
func (e *Enforcer) Shared() bool { return e.shared != nil }
