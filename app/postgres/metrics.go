package postgres

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector reports the app's database to Prometheus at each scrape: whether PostgreSQL answers (one
// ping, at most a second), and the pool's connections and waits, every shard together.
func (db *DB) Collector() prometheus.Collector { return dbCollector{db} }

type dbCollector struct{ db *DB }

var (
	dbUpDesc = prometheus.NewDesc("tenantry_app_database_up",
		"1 when the app's database answered a ping at this scrape, 0 when it did not.", nil, nil)
	poolConnsDesc = prometheus.NewDesc("tenantry_app_db_pool_connections",
		"The app's database connections by state: acquired (in use by a request), idle, and max (the pool's size).",
		[]string{"state"}, nil)
	poolWaitsDesc = prometheus.NewDesc("tenantry_app_db_pool_acquire_waits_total",
		"Connection requests that found the pool empty and waited.", nil, nil)
	poolWaitSecondsDesc = prometheus.NewDesc("tenantry_app_db_pool_acquire_wait_seconds_total",
		"Time requests spent waiting for a connection of the pool.", nil, nil)
)

// pingTimeout bounds the scrape's ping: a database that takes longer is down for the alert's purpose.
const pingTimeout = time.Second

func (c dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dbUpDesc
	ch <- poolConnsDesc
	ch <- poolWaitsDesc
	ch <- poolWaitSecondsDesc
}

func (c dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	up := 1.0
	if c.db.Ping(ctx) != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(dbUpDesc, prometheus.GaugeValue, up)
	var acquired, idle, size, waits int64
	var waited time.Duration
	for _, p := range c.db.shards {
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
}
