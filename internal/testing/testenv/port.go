package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// FreePort returns a loopback TCP port that is free now, for a process the
// test starts to listen on. The port is taken from below the kernel's
// ephemeral range (ip_local_port_range), where the kernel picks the source
// ports of outgoing connections: a port chosen there can be taken by any
// connection of any test before the started process binds it ("Address
// already in use", seen under the load of a full `make test`). Below the
// range only explicit binds compete; the pick is random, so other test
// processes doing the same rarely meet, and this process never hands out
// the same port twice. Where the range cannot be read, the kernel picks.
func FreePort() (int, error) {
	lo, hi, ok := belowEphemeral()
	if !ok {
		return kernelPort()
	}
	ports.Lock()
	defer ports.Unlock()
	for range 200 {
		p := lo + rand.IntN(hi-lo)
		if ports.given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			return 0, err
		}
		ports.given[p] = true
		return p, nil
	}
	return kernelPort()
}

// FreeAddr is FreePort as "127.0.0.1:port".
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

var ports = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// belowEphemeral is the range of ports FreePort picks from: [lo, hi), the
// upper half of the ports below the ephemeral range (16384-32767 with
// Linux's default), clear of the privileged and the usual service ports.
func belowEphemeral() (lo, hi int, ok bool) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	var first, last int
	if _, err := fmt.Sscan(strings.TrimSpace(string(data)), &first, &last); err != nil {
		return 0, 0, false
	}
	lo, hi = max(first/2, 10000), first
	return lo, hi, hi-lo >= 1000
}

func kernelPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	p := l.Addr().(*net.TCPAddr).Port
	return p, l.Close()
}
