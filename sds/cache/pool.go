package cache

import "sync"

// workPool runs functions on at most max goroutines, in the order they were
// submitted. Its goroutines exist only while there is work: an idle cache
// holds none.
type workPool struct {
	max     int
	mu      sync.Mutex
	queue   []func()
	head    int
	low     []func() // taken only when queue is empty
	lowHead int
	running int
}

func (p *workPool) submit(f func()) { p.add(f, false) }

// submitLow queues f behind everything submitted: work done ahead of need
// (certificates of a CA change) must not delay a data plane connecting now.
func (p *workPool) submitLow(f func()) { p.add(f, true) }

func (p *workPool) add(f func(), low bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if low {
		p.low = append(p.low, f)
	} else {
		p.queue = append(p.queue, f)
	}
	if p.running < p.max {
		p.running++
		go p.work()
	}
}

func (p *workPool) work() {
	for {
		p.mu.Lock()
		var f func()
		switch {
		case p.head < len(p.queue):
			f = p.queue[p.head]
			p.queue[p.head] = nil
			p.head++
		case p.lowHead < len(p.low):
			f = p.low[p.lowHead]
			p.low[p.lowHead] = nil
			p.lowHead++
		default:
			p.queue, p.head = p.queue[:0], 0
			p.low, p.lowHead = p.low[:0], 0
			p.running--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		f()
	}
}
