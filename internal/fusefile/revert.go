package fusefile

// reverter undoes the steps of a multi-step operation that failed half way:
// register an undo after each step, defer Fail, call Success at the end.
type reverter struct {
	undo []func()
}

// Add registers f to run on Fail, before the undos registered earlier.
func (r *reverter) Add(f func()) { r.undo = append(r.undo, f) }

// Fail runs the registered undos in reverse order, unless Success was called.
func (r *reverter) Fail() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
}

// Success forgets the undos: the operation is complete.
func (r *reverter) Success() { r.undo = nil }
