package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// reconcileShards reports every shard in status.shards: its tenants, the lowest schema version among
// them and, when the app has shards besides home, whether the operator reaches it. A shard removed
// from spec.shards while tenants remain on it keeps being served, and the app is Stalled until they
// have moved; an unreachable shard leaves the app not Ready (its tenants get 503s, the others are served).
// Its verdict (a stall for a shard removed in use, a retry for one away) holds only the rollout's end.
func (r *ExpenseAppReconciler) reconcileShards(ctx context.Context, run *appRun) error {
	app := run.app
	placed := tenantsByShard(run.tenants)
	minVersion := map[string]int64{}
	for i := range run.tenants {
		t := &run.tenants[i]
		if shard := placedShard(t); shard != "" && t.Status.SchemaVersion > 0 &&
			(minVersion[shard] == 0 || t.Status.SchemaVersion < minVersion[shard]) {
			minVersion[shard] = t.Status.SchemaVersion
		}
	}
	inSpec := map[string]bool{tenantryv1.HomeShard: true}
	for _, s := range app.Spec.Shards {
		inSpec[s.Name] = true
	}
	var statuses []tenantryv1.ShardStatus
	var problems []string
	var verdict error
	for _, shard := range appShards(app, run.tenants) {
		ref, _ := shardRef(app, shard)
		st := tenantryv1.ShardStatus{Name: shard, Tenants: int32(len(placed[shard])), SchemaVersion: minVersion[shard],
			Reachable: meta.IsStatusConditionTrue(app.Status.Conditions, tenantryv1.ConditionDatabaseReady)}
		if shard != tenantryv1.HomeShard {
			st.ClusterDatabase = ref.cluster
			if ref.cluster == "" {
				st.SecretRef = &ref.secret
			}
			st.Reachable, st.Message = true, ""
			if err := r.pingShard(ctx, app, shard); err != nil {
				st.Reachable, st.Message = false, err.Error()
				problems = append(problems, fmt.Sprintf("shard %s: %s", shard, err.Error()))
			}
		}
		if !inSpec[shard] {
			st.Message = fmt.Sprintf("removed from spec.shards but still holds %d tenant(s) (%s): set their spec.shard "+
				"to another shard, and remove it once they have moved", len(placed[shard]), strings.Join(firstNames(placed[shard], 5), ", "))
			if len(placed[shard]) == 0 {
				st.Message = "removed from spec.shards while a move to it is under way: set the moving tenants' spec.shard " +
					"to another shard (the move is given up), and remove it once they have"
			}
			verdict = stallErr(tenantryv1.ReasonShardInUse, time.Minute, fmt.Errorf("shard %s %s", shard, st.Message))
		}
		statuses = append(statuses, st)
	}
	// A shard that was listed and is no longer (removed, and empty) has its connections closed.
	listed := map[string]bool{}
	for _, st := range statuses {
		listed[st.Name] = true
	}
	for _, s := range app.Status.Shards {
		if !listed[s.Name] {
			r.Databases.ForgetShard(types.NamespacedName{Namespace: app.Namespace, Name: app.Name}, s.Name)
		}
	}
	app.Status.Shards = statuses
	switch {
	case verdict != nil:
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionFalse, tenantryv1.ReasonShardInUse, verdict.Error())
	case len(problems) > 0:
		msg := strings.Join(problems, "; ")
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionFalse, tenantryv1.ReasonShardUnreachable, msg)
		verdict = retryErr(tenantryv1.ReasonShardUnreachable, errors.New(msg))
	case len(statuses) > 1:
		setAppCondition(app, tenantryv1.ConditionShardsReady, metav1.ConditionTrue, tenantryv1.ReasonSucceeded,
			fmt.Sprintf("%d shards reachable", len(statuses)))
	default:
		meta.RemoveStatusCondition(&app.Status.Conditions, tenantryv1.ConditionShardsReady)
	}
	return verdict
}

// pingShard checks that the operator reaches a shard, within a few seconds.
func (r *ExpenseAppReconciler) pingShard(ctx context.Context, app *tenantryv1.ExpenseApp, shard string) error {
	db, err := r.Databases.Shard(ctx, app, shard)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return db.Ping(ctx)
}

// firstNames is at most n of names, and how many more there are.
func firstNames(names []string, n int) []string {
	if len(names) <= n {
		return names
	}
	return append(names[:n:n], fmt.Sprintf("and %d more", len(names)-n))
}
