package postgres

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector reports the app's databases to Prometheus at each scrape: whether each answers (one ping
// each, at most a second in all), and the pools' connections and waits, all together.
func (db *DB) Collector() prometheus.Collector { return dbCollector{db} }

type dbCollector struct{ db *DB }

var (
	dbUpDesc = prometheus.NewDesc("tenantry_app_database_up",
		"1 when the app's database (shard \"home\", or another of the ExpenseApp's shards) answered a ping at this scrape, 0 when it did not.",
		[]string{"shard"}, nil)
	poolConnsDesc = prometheus.NewDesc("tenantry_app_db_pool_connections",
		"The app's database connections by state: acquired (in use by a request), idle, and max (the pool's size).",
		[]string{"state"}, nil)
	poolWaitsDesc = prometheus.NewDesc("tenantry_app_db_pool_acquire_waits_total",
		"Connection requests that found the pool empty and waited.", nil, nil)
	poolWaitSecondsDesc = prometheus.NewDesc("tenantry_app_db_pool_acquire_wait_seconds_total",
		"Time requests spent waiting for a connection of the pool.", nil, nil)
	citusTenantsDesc = prometheus.NewDesc("tenantry_app_citus_worker_tenants",
		"On a Citus coordinator, the tenant schemas whose transactions the app sends straight to the worker that holds them.", nil, nil)
)

// pingTimeout bounds the scrape's ping: a database that takes longer is down for the alert's purpose.
const pingTimeout = time.Second

func (c dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dbUpDesc
	ch <- poolConnsDesc
	ch <- poolWaitsDesc
	ch <- poolWaitSecondsDesc
	ch <- citusTenantsDesc
}

func (c dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	for name, err := range c.db.PingShards(ctx) {
		up := 1.0
		if err != nil {
			up = 0
		}
		if name == "" {
			name = "home"
		}
		ch <- prometheus.MustNewConstMetric(dbUpDesc, prometheus.GaugeValue, up, name)
	}
	var acquired, idle, size, waits int64
	var waited time.Duration
	for _, p := range c.db.allPools() {
		s := p.Stat()
		acquired += int64(s.AcquiredConns())
		idle += int64(s.IdleConns())
		size += int64(s.MaxConns())
		waits += s.EmptyAcquireCount()
		waited += s.EmptyAcquireWaitTime()
	}
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(acquired), "acquired")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(size), "max")
	ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(waits))
	ch <- prometheus.MustNewConstMetric(poolWaitSecondsDesc, prometheus.CounterValue, waited.Seconds())
	if n := c.db.CitusWorkers(); n >= 0 {
		ch <- prometheus.MustNewConstMetric(citusTenantsDesc, prometheus.GaugeValue, float64(n))
	}
}
