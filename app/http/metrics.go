package http

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tenantry.dev/tenantry/app"
	"tenantry.dev/tenantry/app/postgres"
)

// Metrics are the app's Prometheus metrics, per route (the pattern, never the raw path, so tenants'
// ids do not explode the label set), and, when asked for, per tenant up to a bound.
type Metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	// Per tenant: nil unless enabled. counted holds the tenants with labels of their own.
	tenantRequests, tenantErrors *prometheus.CounterVec
	maxTenants                   int
	mu                           sync.Mutex
	counted                      map[string]bool
}

// NewMetrics registers the metrics with a registry of their own. maxTenants above 0 adds per-tenant
// request and server-error counters for at most that many tenants.
func NewMetrics(maxTenants int) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantry_app_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tenantry_app_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
	}
	m.registry.MustRegister(m.requests, m.duration, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if maxTenants > 0 {
		m.maxTenants, m.counted = maxTenants, map[string]bool{}
		m.tenantRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantry_app_tenant_requests_total",
			Help: "HTTP requests per tenant (namespace/name; beyond --tenant-metrics tenants, \"other\").",
		}, []string{"tenant"})
		m.tenantErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantry_app_tenant_errors_total",
			Help: "HTTP requests per tenant answered with a server error (5xx).",
		}, []string{"tenant"})
		m.registry.MustRegister(m.tenantRequests, m.tenantErrors)
	}
	return m
}

// watch adds the database's metrics and the registry's size, for whichever of them the app has.
func (m *Metrics) watch(db *postgres.DB, registry *postgres.Registry) {
	if db != nil {
		m.registry.MustRegister(db.Collector())
	}
	if registry != nil {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tenantry_app_tenants", Help: "Tenants in the app's registry (every state but retained).",
		}, func() float64 { return float64(registry.Len()) }))
	}
}

// tenantLabel is a tenant's label value: its own while fewer than maxTenants have one, else "other".
func (m *Metrics) tenantLabel(t *app.Tenant) string {
	key := t.Namespace + "/" + t.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.counted[key] {
		if len(m.counted) >= m.maxTenants {
			return "other"
		}
		m.counted[key] = true
	}
	return key
}

// countTenant counts one request of a tenant, if per-tenant metrics are on.
func (m *Metrics) countTenant(t *app.Tenant, status int) {
	if m.tenantRequests == nil || t == nil {
		return
	}
	label := m.tenantLabel(t)
	m.tenantRequests.WithLabelValues(label).Inc()
	errors := m.tenantErrors.WithLabelValues(label) // exported from the tenant's first request, at 0
	if status >= 500 {
		errors.Inc()
	}
}

// Handler serves the metrics, on a listener apart from tenant traffic.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// requestInfo is what the handlers inside learn of a request for observe: the route that matched and
// the tenant the host named (nil for none).
type requestInfo struct {
	route  string
	tenant *app.Tenant
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe records metrics and a structured log line for every request.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		info := &requestInfo{}
		r = r.WithContext(context.WithValue(r.Context(), routeKey, info))
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		route := info.route
		if route == "" {
			route = r.Pattern
		}
		if route == "" || route == "/" {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(route, methodLabel(r.Method), strconv.Itoa(sw.status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		s.metrics.countTenant(info.tenant, sw.status)
		if route != "GET /healthz" && route != "GET /readyz" {
			s.cfg.Log.Info("request", "method", r.Method, "host", r.Host, "path", r.URL.Path, "route", route,
				"status", sw.status, "duration_ms", float64(elapsed.Microseconds())/1000)
		}
	})
}
