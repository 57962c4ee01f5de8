package kubetest

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// proxy forwards TCP connections from a loopback port to the API server,
// and can cut them all at once to simulate a network partition. TLS passes
// through untouched: clients verify the API server's own certificate.
type proxy struct {
	lis      net.Listener
	upstream string

	mu          sync.Mutex
	partitioned bool
	conns       map[net.Conn]struct{}
	wg          sync.WaitGroup
}

func newProxy(t testing.TB, upstream string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{lis: lis, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.partitioned {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(c)
	}
}

// forward pipes c to a new upstream connection until either side closes.
func (p *proxy) forward(c net.Conn) {
	defer p.wg.Done()
	defer p.forget(c)
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.partitioned {
		p.mu.Unlock()
		_ = up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Closing both ends ends the other direction too.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

func (p *proxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// setPartitioned cuts (true) or restores (false) connectivity.
func (p *proxy) setPartitioned(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partitioned = on
	if on {
		for c := range p.conns {
			_ = c.Close()
		}
	}
}

// close stops the proxy and waits for its goroutines.
func (p *proxy) close() {
	_ = p.lis.Close()
	p.setPartitioned(true)
	p.wg.Wait()
}
