package grpclite

// BufferedBytes is what the connections of s hold of their clients'
// incomplete messages.
func BufferedBytes(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		c.mu.Lock()
		n += c.held
		c.mu.Unlock()
	}
	return n
}
