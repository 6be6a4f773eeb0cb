package controller

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// Nodes follows which Citus worker holds each tenant's schema. An ExpenseApp on a Citus coordinator
// reads every placement of its tenants in one query, every citusPoll; a Tenant whose status.node is
// not where its schema now is (a rebalance moved it) is told, and takes the node from here without
// SQL of its own.
type Nodes struct {
	// Changed receives each Tenant whose schema is on another node than its status says.
	Changed chan event.GenericEvent

	mu    sync.Mutex
	nodes map[types.NamespacedName]string // tenant → node
}

// NewNodes returns Nodes with a channel for the Tenant controller.
func NewNodes() *Nodes {
	return &Nodes{Changed: make(chan event.GenericEvent, 4096), nodes: map[types.NamespacedName]string{}}
}

// citusPoll is how often an ExpenseApp on Citus reads where its tenants' schemas are.
const citusPoll = 10 * time.Second

// Node returns the node last seen holding a tenant's schema.
func (n *Nodes) Node(tenant types.NamespacedName) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	node, ok := n.nodes[tenant]
	return node, ok
}

// Forget drops what is known of a tenant.
func (n *Nodes) Forget(tenant types.NamespacedName) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, tenant)
}

// reconcileCitus follows, on a Citus coordinator (status.citus, found when the app's login was
// made), the worker that holds each tenant's schema, and looks again every citusPoll.
func (r *ExpenseAppReconciler) reconcileCitus(ctx context.Context, run *appRun) error {
	if !run.app.Status.Citus {
		return nil
	}
	db, err := r.Databases.For(ctx, run.app)
	if err != nil {
		return nil // the database's absence shows in DatabaseReady
	}
	run.requeue = citusPoll
	where, err := db.SchemaNodes(ctx)
	if err != nil {
		logf.FromContext(ctx).Info("cannot read where the tenants' schemas are", "error", err.Error())
		return nil
	}
	r.Nodes.mu.Lock()
	var moved []types.NamespacedName
	for i := range run.tenants {
		t := &run.tenants[i]
		node, ok := where[t.Status.Schema]
		if !ok || t.Status.Schema == "" {
			continue
		}
		key := types.NamespacedName{Namespace: t.Namespace, Name: t.Name}
		r.Nodes.nodes[key] = node
		if node != t.Status.Node {
			moved = append(moved, key)
		}
	}
	r.Nodes.mu.Unlock()
	for _, key := range moved {
		select {
		case r.Nodes.Changed <- event.GenericEvent{Object: &tenantryv1.Tenant{ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name}}}:
		default: // full: the next poll tells it again
		}
	}
	return nil
}

// reconcileNode takes the node that holds the tenant's schema from what its ExpenseApp last read.
func (r *TenantReconciler) reconcileNode(_ context.Context, run *tenantRun) error {
	if node, ok := r.Nodes.Node(types.NamespacedName{Namespace: run.t.Namespace, Name: run.t.Name}); ok && node != "" {
		run.t.Status.Node = node
	}
	return nil
}
