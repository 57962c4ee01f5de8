package grpclite

// BufferedBytes is what the connections of s hold of incomplete messages,
// as each last measured it: what a client can make the server buffer.
func BufferedBytes(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(0)
	for c := range s.conns {
		n += c.buffered.Load()
	}
	return int(n)
}
