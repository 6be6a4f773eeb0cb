package apptest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Writer creates expenses for one tenant through the app's JSON API, one after the other, until
// stopped: the load under which a tenant is moved or rebalanced, and the record of what the app
// acknowledged, to look for afterwards.
type Writer struct {
	done   chan struct{}
	result chan WriteResult
}

// WriteResult is what a Writer saw.
type WriteResult struct {
	// Acked are the descriptions of the expenses the app acknowledged (201), unique to the Writer's prefix.
	Acked []string
	// Pause is the longest time between two acknowledged writes.
	Pause time.Duration
	// Refusals counts 503s (each followed by a short wait); Errors any other answer.
	Refusals, Errors int
	// Unexpected holds the first few other answers, as "status: body".
	Unexpected []string
}

// StartWriter starts writing to the app at base (e.g. http://127.0.0.1:8080) as the tenant of host, into
// budget budgetID; auth adds the credentials (a session cookie or an API token) to each request.
func StartWriter(client *http.Client, base, host string, budgetID int64, prefix string, auth func(*http.Request)) *Writer {
	w := &Writer{done: make(chan struct{}), result: make(chan WriteResult, 1)}
	go func() {
		var res WriteResult
		last := time.Now()
		for i := 0; ; i++ {
			select {
			case <-w.done:
				w.result <- res
				return
			default:
			}
			desc := fmt.Sprintf("%s%d", prefix, i)
			body := fmt.Sprintf(`{"budgetId":%d,"spentOn":%q,"description":%q,"amountMinor":100}`,
				budgetID, time.Now().Format("2006-01-02"), desc)
			req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/expenses", strings.NewReader(body))
			req.Host = host
			req.Header.Set("Content-Type", "application/json")
			auth(req)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusCreated:
				res.Acked = append(res.Acked, desc)
				res.Pause = max(res.Pause, time.Since(last))
				last = time.Now()
			case http.StatusServiceUnavailable:
				res.Refusals++
				time.Sleep(20 * time.Millisecond)
			default:
				res.Errors++
				if len(res.Unexpected) < 5 {
					res.Unexpected = append(res.Unexpected, fmt.Sprintf("%d: %s", resp.StatusCode, answer))
				}
			}
		}
	}()
	return w
}

// Stop stops the Writer and returns what it saw.
func (w *Writer) Stop() WriteResult {
	close(w.done)
	return <-w.result
}
