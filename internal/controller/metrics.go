package controller

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Operator metrics, served with controller-runtime's (reconcile totals, errors and durations, work
// queues) on the manager's metrics endpoint.
var (
	migrationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tenantry_migration_duration_seconds", Help: "Time to bring one tenant schema to the target version.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
	})
	migrationFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tenantry_migration_failures_total", Help: "Tenant schema migrations that failed.",
	})
	tenantsByState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tenantry_tenants", Help: "Tenants of an ExpenseApp by state (total, ready, at_target, failed, drifted, planted, uncompared).",
	}, []string{"namespace", "app", "state"})
	rolloutHalted = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tenantry_rollout_halted", Help: "1 while an ExpenseApp's fleet rollout is halted by its failure budget.",
	}, []string{"namespace", "app"})
	moveCutoverSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tenantry_move_cutover_seconds", Help: "How long a tenant's writes were paused by the cut-over of its move between shards.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
	})
	moveFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tenantry_move_failures_total", Help: "Moves of tenants between shards that failed and were undone.",
	})
	backupsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantry_backups_total", Help: "Backups of tenants taken, by result (completed, failed).",
	}, []string{"result"})
	backupSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tenantry_backup_duration_seconds", Help: "Time to take one tenant's backup, from its snapshot to its manifest.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12),
	})
	restoresTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantry_restores_total", Help: "Restores of backups into tenants, by result (completed, failed).",
	}, []string{"result"})
)

// slotLags is the WAL each move in progress keeps on its source through its replication slot, by
// tenant; tenantry_move_slot_lag_bytes is the largest (0 with no move under way).
var slotLags = &lagGauge{lags: map[string]int64{}}

type lagGauge struct {
	mu   sync.Mutex
	lags map[string]int64
}

var slotLagDesc = prometheus.NewDesc("tenantry_move_slot_lag_bytes",
	"The most WAL a replication slot of a move in progress keeps on the move's source server (0 with no move under way).", nil, nil)

func (g *lagGauge) set(tenant string, lag int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lags[tenant] = lag
}

func (g *lagGauge) forget(tenant string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.lags, tenant)
}

func (g *lagGauge) Describe(ch chan<- *prometheus.Desc) { ch <- slotLagDesc }

func (g *lagGauge) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var most int64
	for _, l := range g.lags {
		most = max(most, l)
	}
	ch <- prometheus.MustNewConstMetric(slotLagDesc, prometheus.GaugeValue, float64(most))
}

// forgetAppMetrics drops the series of an ExpenseApp that is gone.
func forgetAppMetrics(namespace, app string) {
	labels := prometheus.Labels{"namespace": namespace, "app": app}
	tenantsByState.DeletePartialMatch(labels)
	rolloutHalted.DeletePartialMatch(labels)
}

func init() {
	// Every result from the start, at 0: a rate over a counter that appears only at its first failure
	// misses that failure.
	for _, result := range []string{"completed", "failed"} {
		backupsTotal.WithLabelValues(result)
		restoresTotal.WithLabelValues(result)
	}
	metrics.Registry.MustRegister(migrationSeconds, migrationFailures, tenantsByState, rolloutHalted, moveCutoverSeconds, moveFailures,
		slotLags, backupsTotal, backupSeconds, restoresTotal)
}

// statementsCollector exposes how many SQL statements the operator has sent, per ExpenseApp database.
type statementsCollector struct{ dbs *Databases }

var statementsDesc = prometheus.NewDesc("tenantry_database_statements_total",
	"SQL statements the operator has sent to an ExpenseApp's database (one of its shards) since it connected.",
	[]string{"namespace", "app", "shard"}, nil)

func (c statementsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- statementsDesc }

func (c statementsCollector) Collect(ch chan<- prometheus.Metric) {
	c.dbs.mu.Lock()
	defer c.dbs.mu.Unlock()
	for k, d := range c.dbs.dbs {
		ch <- prometheus.MustNewConstMetric(statementsDesc, prometheus.CounterValue, float64(d.db.Statements()),
			k.app.Namespace, k.app.Name, k.shard)
	}
}
