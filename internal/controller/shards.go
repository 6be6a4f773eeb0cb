package controller

// Where a tenant's schema lives, in the words of an ExpenseApp and its Tenants: the shard names
// ("home" for spec.database, the names of spec.shards), the database of each, and which shard holds each
// tenant. The registry spells home as the empty string (registry.ShardColumn, registry.ShardName).

import (
	"sort"

	"k8s.io/apimachinery/pkg/api/meta"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// dbRef is where a shard's admin connection string is: the ClusterDatabase named cluster, or (on a
// single-team install) the Secret secret of the app's own namespace.
type dbRef struct {
	cluster string
	secret  tenantryv1.SecretKeyRef
}

func newDBRef(cluster string, secret *tenantryv1.SecretKeyRef) dbRef {
	if secret == nil || cluster != "" {
		return dbRef{cluster: cluster}
	}
	return dbRef{secret: *secret}
}

// shardRef is the database of a shard: spec.database for home, spec.shards for the others, and, for
// a shard removed from the spec while tenants remain on it, the one it was last reached with
// (status.shards).
func shardRef(app *tenantryv1.ExpenseApp, shard string) (dbRef, bool) {
	if shard == tenantryv1.HomeShard || shard == "" {
		return newDBRef(app.Spec.Database.ClusterDatabase, app.Spec.Database.SecretRef), true
	}
	for _, s := range app.Spec.Shards {
		if s.Name == shard {
			return newDBRef(s.ClusterDatabase, s.SecretRef), true
		}
	}
	for _, s := range app.Status.Shards {
		if s.Name == shard && (s.ClusterDatabase != "" || s.SecretRef != nil) {
			return newDBRef(s.ClusterDatabase, s.SecretRef), true
		}
	}
	return dbRef{}, false
}

// placedShard is the shard that holds a tenant's schema: status.shard, or home for a tenant placed before
// there were shards; "" for a tenant not placed yet.
func placedShard(t *tenantryv1.Tenant) string {
	switch {
	case t.Status.Shard != "":
		return t.Status.Shard
	case t.Status.Schema != "":
		return tenantryv1.HomeShard
	}
	return ""
}

// tenantsByShard names the tenants placed on each shard.
func tenantsByShard(tenants []tenantryv1.Tenant) map[string][]string {
	placed := map[string][]string{}
	for i := range tenants {
		if shard := placedShard(&tenants[i]); shard != "" {
			placed[shard] = append(placed[shard], tenants[i].Name)
		}
	}
	return placed
}

// appShards lists an ExpenseApp's shards: home, those of its spec, and any it had that still holds
// tenants or is the target of a move under way (removed from the spec too early; still served, so that
// the move can finish or be given up, and reported Stalled).
func appShards(app *tenantryv1.ExpenseApp, tenants []tenantryv1.Tenant) []string {
	shards := []string{tenantryv1.HomeShard}
	known := map[string]bool{tenantryv1.HomeShard: true}
	for _, s := range app.Spec.Shards {
		shards = append(shards, s.Name)
		known[s.Name] = true
	}
	var kept []string
	keep := func(shard string) {
		if _, ok := shardRef(app, shard); ok && !known[shard] {
			kept = append(kept, shard)
			known[shard] = true
		}
	}
	for shard := range tenantsByShard(tenants) {
		keep(shard)
	}
	for i := range tenants {
		if t := &tenants[i]; t.Spec.Shard != "" && meta.FindStatusCondition(t.Status.Conditions, tenantryv1.ConditionMoving) != nil {
			keep(t.Spec.Shard)
		}
	}
	sort.Strings(kept)
	return append(shards, kept...)
}

// hasShard says whether an ExpenseApp's spec has a shard of that name (home included).
func hasShard(app *tenantryv1.ExpenseApp, shard string) bool {
	if shard == tenantryv1.HomeShard {
		return true
	}
	for _, s := range app.Spec.Shards {
		if s.Name == shard {
			return true
		}
	}
	return false
}
