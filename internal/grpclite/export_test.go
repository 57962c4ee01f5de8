package grpclite

// BufferedBytes is what the connections of s hold of their clients'
// messages: incomplete ones, and those their handlers have not read yet.
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
