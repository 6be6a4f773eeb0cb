package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// target is one tenant as the load generator sees it.
type target struct {
	host, token string
	budgetID    int64
}

// operation builds a request for a tenant.
type operation func(t target) (*http.Request, error)

// loadResult is what one load run measured.
type loadResult struct {
	rps      float64
	p50, p99 time.Duration
	errors   int64
}

type loadClient struct {
	base   string
	client *http.Client
}

func newLoadClient(base string) *loadClient {
	return &loadClient{base: base, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
	}}}
}

func (c *loadClient) once(op operation, t target) (time.Duration, error) {
	req, err := op(t)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	res, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		return 0, fmt.Errorf("%s %s on %s: %d", req.Method, req.URL.Path, req.Host, res.StatusCode)
	}
	return time.Since(start), nil
}

// closedLoopClients is how many clients a closed loop runs back to back.
const closedLoopClients = 16

// closedLoop runs closedLoopClients clients back to back for d: the peak rate the app sustains.
func (c *loadClient) closedLoop(ctx context.Context, op operation, targets []target, d time.Duration) loadResult {
	workers := closedLoopClients
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				l, err := c.once(op, targets[rand.IntN(len(targets))])
				if err != nil {
					errs.Add(1)
					continue
				}
				mine = append(mine, l)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lat, d, errs.Load())
}

// openLoop sends requests at a fixed rate for d, each on its own schedule, and measures latency from
// when a request was due, so a stall is counted in full (no coordinated omission).
func (c *loadClient) openLoop(ctx context.Context, op operation, targets []target, rate float64, d time.Duration) loadResult {
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.once(op, targets[rand.IntN(len(targets))])
			if err != nil {
				errs.Add(1)
				return
			}
			l := time.Since(due)
			mu.Lock()
			lat = append(lat, l)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lat, d, errs.Load())
}

func summarize(lat []time.Duration, d time.Duration, errs int64) loadResult {
	if len(lat) == 0 {
		return loadResult{errors: errs}
	}
	slices.Sort(lat)
	at := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return loadResult{rps: float64(len(lat)) / d.Seconds(), p50: at(0.50), p99: at(0.99), errors: errs}
}

func (c *loadClient) dashboardRead(t target) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+"/api/v1/dashboard", nil)
	if err != nil {
		return nil, err
	}
	req.Host = t.host
	req.Header.Set("Authorization", "Bearer "+t.token)
	return req, nil
}

func (c *loadClient) expenseWrite(t target) (*http.Request, error) {
	body := fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":"Load test taxi","amountMinor":%d}`,
		t.budgetID, time.Now().Format("2006-01-02"), 100+rand.IntN(1000))
	req, err := http.NewRequest(http.MethodPost, c.base+"/api/v1/expenses", bytes.NewBufferString(body))
	if err != nil {
		return nil, err
	}
	req.Host = t.host
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}
