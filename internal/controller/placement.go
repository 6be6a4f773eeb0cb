package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// Placement chooses the shard of each new tenant: its spec.shard, else its ExpenseApp's placement
// policy. It counts the tenants on each shard from the informer cache, plus the choices it made that
// the cache does not show yet, so that tenants placed at the same moment spread out. Only the leader
// reconciles, so one Placement sees every choice.
type Placement struct {
	mu sync.Mutex
	// chosen remembers recent choices until the cache shows them (or they are old enough to have shown).
	chosen map[types.NamespacedName]choice
}

type choice struct {
	shard string
	at    time.Time
}

// choiceMemory is how long a choice is counted from memory: far longer than the cache takes to show it.
const choiceMemory = time.Minute

// Choose returns the shard for a tenant that has none yet. A spec.shard the app does not have is a
// stall error.
func (p *Placement) Choose(ctx context.Context, c client.Reader, t *tenantryv1.Tenant, app *tenantryv1.ExpenseApp) (string, error) {
	if t.Spec.Shard != "" {
		if !hasShard(app, t.Spec.Shard) {
			return "", stallErr(tenantryv1.ReasonShardNotFound, time.Minute, fmt.Errorf(
				"spec.shard %q is not a shard of ExpenseApp %s: name %q or one of its spec.shards", t.Spec.Shard, app.Name, tenantryv1.HomeShard))
		}
		return t.Spec.Shard, nil
	}
	if len(app.Spec.Shards) == 0 || app.Spec.Placement.Policy == tenantryv1.PlacementHome {
		return tenantryv1.HomeShard, nil
	}
	var list tenantryv1.TenantList
	if err := c.List(ctx, &list, client.InNamespace(app.Namespace), client.MatchingFields{indexAppRef: app.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return "", retryErr(tenantryv1.ReasonAPIServerError, err)
	}
	me := types.NamespacedName{Namespace: t.Namespace, Name: t.Name}
	p.mu.Lock()
	defer p.mu.Unlock()
	count := map[string]int{}
	for i := range list.Items {
		key := types.NamespacedName{Namespace: list.Items[i].Namespace, Name: list.Items[i].Name}
		shard := placedShard(&list.Items[i])
		if ch, ok := p.chosen[key]; shard == "" && ok && key != me {
			shard = ch.shard
		}
		if shard != "" {
			count[shard]++
		}
	}
	best := tenantryv1.HomeShard
	for _, s := range app.Spec.Shards {
		if count[s.Name] < count[best] {
			best = s.Name
		}
	}
	if p.chosen == nil {
		p.chosen = map[types.NamespacedName]choice{}
	}
	now := time.Now()
	for k, ch := range p.chosen {
		if now.Sub(ch.at) > choiceMemory {
			delete(p.chosen, k)
		}
	}
	p.chosen[me] = choice{shard: best, at: now}
	return best, nil
}
