package loadgen

import (
	"context"
	"sync"
	"time"
)

// ProcWindow is the resource use of a process over a run: samples before
// the ramp, at the start and at the end of the measured window, and the
// largest resident memory sampled once a second in the window.
type ProcWindow struct {
	PID     int
	Before  ProcSample
	Start   ProcSample
	End     ProcSample
	PeakRSS int64
	// Errors counts samples that could not be read, such as after the
	// process exited.
	Errors int
}

// sampler reads one process's memory and CPU time. Its methods do nothing
// on a nil sampler, which stands for an edge PID left unset.
type sampler struct {
	pid int

	mu     sync.Mutex
	window ProcWindow
	marks  int
}

// newSampler takes the first sample of pid, or of this process for pid 0.
func newSampler(pid int) (*sampler, error) {
	s := &sampler{pid: pid}
	first, err := readProc(pid)
	if err != nil {
		return nil, err
	}
	s.window = ProcWindow{PID: pid, Before: first, PeakRSS: first.RSS}
	return s, nil
}

// mark takes the sample at the start of the window, then the one at its end.
func (s *sampler) mark() {
	if s == nil {
		return
	}
	sample, err := readProc(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.window.Errors++
		return
	}
	s.window.PeakRSS = max(s.window.PeakRSS, sample.RSS)
	switch s.marks {
	case 0:
		s.window.Start = sample
	default:
		s.window.End = sample
	}
	s.marks++
}

// sampleEvery records the peak resident memory until ctx ends.
func (s *sampler) sampleEvery(ctx context.Context, every time.Duration) {
	if s == nil {
		return
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		sample, err := readProc(s.pid)
		s.mu.Lock()
		if err != nil {
			s.window.Errors++
		} else {
			s.window.PeakRSS = max(s.window.PeakRSS, sample.RSS)
		}
		s.mu.Unlock()
	}
}

// result returns the samples, or nil for a nil sampler.
func (s *sampler) result() *ProcWindow {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return new(s.window)
}
