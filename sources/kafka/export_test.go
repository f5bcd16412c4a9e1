package kafka

// Crash ends s as a killed process would, for the group: it stops reading
// and closes the client without committing or leaving the group (a static
// member's Close sends no LeaveGroup).
func (s *Source) Crash() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.stopIntake()
	s.stopWork()
	<-s.done
	s.cl.CloseAllowingRebalance()
	s.cancelProduce()
}
