// The group benchmark's cases in Go, with errgroup.WithContext semantics, for
// `cargo bench -p muster-core --bench group -- --report PATH` (run only when `go` is
// installed; `cargo xtask bench` installs it). Prints the same tab-separated lines as the
// Rust harness: scenario, implementation, n, median ns, p99 ns, p95 ns.
//
// The errgroup below is golang.org/x/sync/errgroup's WithContext/Go/Wait written out with
// the standard library only (sync.WaitGroup, context.WithCancel, the first error kept), so
// that the benchmark needs no module download: Go modules cannot be fetched here.
package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

type group struct {
	cancel  func()
	wg      sync.WaitGroup
	errOnce sync.Once
	err     error
}

func withContext(ctx context.Context) (*group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &group{cancel: cancel}, ctx
}

func (g *group) Go(f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(); err != nil {
			g.errOnce.Do(func() {
				g.err = err
				if g.cancel != nil {
					g.cancel()
				}
			})
		}
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	if g.cancel != nil {
		g.cancel()
	}
	return g.err
}

var errBoom = errors.New("boom")

// One run of a scenario; returns the time to report for it.
type run func(n int) time.Duration

// Every source succeeds at once (ready) or after yielding once (yield_once).
func succeed(n int, yield bool) time.Duration {
	started := time.Now()
	g, _ := withContext(context.Background())
	outputs := make([]int, n)
	for i := 0; i < n; i++ {
		i := i
		g.Go(func() error {
			if yield {
				runtime.Gosched()
			}
			outputs[i] = i
			return nil
		})
	}
	_ = g.Wait()
	return time.Since(started)
}

func ready(n int) time.Duration     { return succeed(n, false) }
func yieldOnce(n int) time.Duration { return succeed(n, true) }

// Source 0 yields once and fails; the others wait for the group's cancellation.
func failFast(n int) time.Duration {
	started := time.Now()
	g, ctx := withContext(context.Background())
	for i := 0; i < n; i++ {
		i := i
		g.Go(func() error {
			if i == 0 {
				runtime.Gosched()
				return errBoom
			}
			<-ctx.Done()
			return nil
		})
	}
	_ = g.Wait()
	return time.Since(started)
}

// From source 0's error (after a real 1 ms timer) to Wait returning.
func failAfterTimer(n int) time.Duration {
	var errored time.Time
	g, ctx := withContext(context.Background())
	for i := 0; i < n; i++ {
		i := i
		g.Go(func() error {
			if i == 0 {
				time.Sleep(time.Millisecond)
				errored = time.Now()
				return errBoom
			}
			t := time.NewTimer(10 * time.Second)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			return nil
		})
	}
	_ = g.Wait()
	return time.Since(errored)
}

func measure(scenario string, n int, f run, iterations int) {
	const rounds = 200
	samples := make([]float64, 0, rounds)
	for r := 0; r < rounds; r++ {
		var total time.Duration
		for k := 0; k < iterations; k++ {
			total += f(n)
		}
		samples = append(samples, float64(total.Nanoseconds())/float64(iterations))
	}
	sort.Float64s(samples)
	at := func(q float64) float64 { return samples[int(float64(len(samples)-1)*q+0.5)] }
	fmt.Printf("%s\tgo_errgroup\t%d\t%.1f\t%.1f\t%.1f\n", scenario, n, at(0.5), at(0.99), at(0.95))
}

func main() {
	for _, n := range []int{2, 8, 64} {
		measure("ready", n, ready, 100)
		measure("yield_once", n, yieldOnce, 100)
		measure("fail_fast", n, failFast, 100)
		// One failure per sample, as in the Rust harness: the percentiles are per failure.
		measure("fail_after_timer", n, failAfterTimer, 1)
	}
}
