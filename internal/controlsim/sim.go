// Package controlsim simulates many agents against a configuration
// server, for `make bench-control`: each agent joins with its own token
// and certificate, then heartbeats and reports its machine every
// interval over its own mutual-TLS connection, while API readers list
// and get machines and servers and time each call.
package controlsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// Options of a simulation.
type Options struct {
	Server     string // https://HOST:PORT
	AdminToken string
	CAFile     string // the server's ca.crt
	Dir        string // where the simulated agents' join directories go
	Agents     int
	Interval   time.Duration // between two heartbeats (and reports) of one agent
	Duration   time.Duration // of the measured phase, after every agent has reported once
	Readers    int           // concurrent API readers
	// ReaderPause is each reader's pause between two calls (operators and
	// consoles, not a load generator of their own); 0: none.
	ReaderPause time.Duration
	JoinWorkers int
	Log         *slog.Logger
}

// Result of a simulation.
type Result struct {
	Agents      int     `json:"agents"`
	JoinSeconds float64 `json:"join_seconds"`
	Seconds     float64 `json:"seconds"` // of the measured phase
	Heartbeats  int64   `json:"heartbeats"`
	Reports     int64   `json:"reports"`
	AgentErrors int64   `json:"agent_errors"`
	LastError   string  `json:"last_error,omitempty"`
	// Late counts agent calls that started more than one interval after
	// they were due (the server did not keep up).
	Late     int64   `json:"late"`
	APICalls int     `json:"api_calls"`
	APIP50ms float64 `json:"api_p50_ms"`
	APIP99ms float64 `json:"api_p99_ms"`
	APIMaxms float64 `json:"api_max_ms"`
}

// Run joins the agents, runs them for the warm-up (every agent reports
// once) and Duration, and measures the API readers during Duration.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Agents <= 0 || o.Interval <= 0 || o.Duration <= 0 {
		return Result{}, errors.New("controlsim: agents, interval and duration must be positive")
	}
	if o.Readers <= 0 {
		o.Readers = 4
	}
	if o.JoinWorkers <= 0 {
		o.JoinWorkers = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	admin, err := client.New(client.Options{Server: o.Server, Token: o.AdminToken, CAFile: o.CAFile})
	if err != nil {
		return Result{}, err
	}
	res := Result{Agents: o.Agents}
	t0 := time.Now()
	comps, err := joinAll(ctx, o, admin)
	if err != nil {
		return res, err
	}
	res.JoinSeconds = time.Since(t0).Seconds()
	o.Log.Info("agents joined", "agents", len(comps), "seconds", res.JoinSeconds)

	var hb, rep, errs, late atomic.Int64
	var lastErr atomic.Value
	var reported sync.WaitGroup
	reported.Add(len(comps))
	actx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for i, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			once := sync.OnceFunc(reported.Done)
			defer once()
			name := fmt.Sprintf("sim%05d", i)
			// Spread the agents over the interval.
			next := time.Now().Add(time.Duration(rand.Int64N(int64(o.Interval))))
			for beat := 0; ; beat++ {
				select {
				case <-actx.Done():
					return
				case <-time.After(time.Until(next)):
				}
				if time.Since(next) > o.Interval {
					late.Add(1)
				}
				next = next.Add(o.Interval)
				cctx, cancel := context.WithTimeout(actx, 30*time.Second)
				err := c.Heartbeat(cctx, api.HeartbeatRequest{Version: "sim", Capacity: control.Capacity{Machines: 1}})
				if err == nil {
					hb.Add(1)
					_, err = c.Report(cctx, api.AgentReport{ID: "m-" + name, Name: name,
						Disks:       []control.Disk{{Name: "vda", Size: 20 << 30}},
						Replication: control.ReplicationReport{State: control.AgentProtected, RPOSeconds: 0.3 + rand.Float64()*0.4}})
				}
				cancel()
				if err != nil {
					if actx.Err() != nil {
						return
					}
					errs.Add(1)
					lastErr.Store(err.Error())
					continue
				}
				rep.Add(1)
				once()
			}
		}()
	}
	waitCtx(ctx, &reported)
	o.Log.Info("every agent reported once; measuring", "seconds", o.Duration.Seconds())
	hb0, rep0, err0, late0 := hb.Load(), rep.Load(), errs.Load(), late.Load()

	lat := measure(ctx, o, admin, comps)
	res.Seconds = o.Duration.Seconds()
	res.Heartbeats, res.Reports, res.AgentErrors, res.Late = hb.Load()-hb0, rep.Load()-rep0, errs.Load()-err0, late.Load()-late0
	if v, ok := lastErr.Load().(string); ok {
		res.LastError = v
	}
	stop()
	wg.Wait()
	for _, c := range comps {
		c.Close()
	}
	if len(lat) == 0 {
		return res, errors.New("controlsim: no API call succeeded")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e6 }
	res.APICalls, res.APIP50ms, res.APIP99ms, res.APIMaxms = len(lat), pct(0.50), pct(0.99), float64(lat[len(lat)-1])/1e6
	return res, ctx.Err()
}

func waitCtx(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// joinAll makes a token and joins each agent, a few at a time.
func joinAll(ctx context.Context, o Options, admin *client.Client) ([]*client.Component, error) {
	comps := make([]*client.Component, o.Agents)
	var mu sync.Mutex
	var firstErr error
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range o.JoinWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c, err := joinOne(ctx, o, admin, i)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("agent %d: %w", i, err)
				}
				comps[i] = c
				mu.Unlock()
			}
		}()
	}
	for i := range o.Agents {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return comps, firstErr
}

func joinOne(ctx context.Context, o Options, admin *client.Client, i int) (*client.Component, error) {
	var tok struct {
		Token string `json:"token"`
	}
	if err := admin.Do(ctx, "POST", "/v1/tokens", map[string]string{"role": "agent", "ttl": "1h"}, &tok); err != nil {
		return nil, err
	}
	dir := filepath.Join(o.Dir, fmt.Sprintf("agent%05d", i))
	if _, err := trust.Join(ctx, trust.JoinOptions{ServerURL: o.Server, Token: tok.Token, Role: control.RoleAgent, Name: fmt.Sprintf("simhost%05d", i), Version: "sim", Dir: dir}); err != nil {
		return nil, err
	}
	return client.NewComponent(o.Server, dir)
}

// measure runs the API readers for o.Duration and returns the latency of
// every call that succeeded, in nanoseconds: lists of machines and
// servers, and gets of single machines and servers.
func measure(ctx context.Context, o Options, admin *client.Client, comps []*client.Component) []int64 {
	mctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var mu sync.Mutex
	var lat []int64
	var wg sync.WaitGroup
	for r := range o.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; mctx.Err() == nil; k++ {
				var path string
				switch (k + r) % 4 {
				case 0:
					path = "/v1/machines"
				case 1:
					path = fmt.Sprintf("/v1/machines/sim%05d", rand.IntN(len(comps)))
				case 2:
					path = "/v1/servers?role=agent"
				case 3:
					path = "/v1/servers/" + comps[rand.IntN(len(comps))].Identity().ID
				}
				t := time.Now()
				var out json.RawMessage // taken as is: the reader times the server, not its own decoding
				err := admin.Do(mctx, "GET", path, nil, &out)
				d := time.Since(t)
				if err != nil {
					if mctx.Err() == nil {
						o.Log.Warn("api call", "path", path, "err", err)
					}
					continue
				}
				mu.Lock()
				lat = append(lat, d.Nanoseconds())
				mu.Unlock()
				if o.ReaderPause > 0 {
					select {
					case <-mctx.Done():
					case <-time.After(o.ReaderPause):
					}
				}
			}
		}()
	}
	wg.Wait()
	return lat
}
