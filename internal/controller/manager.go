package controller

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
	"tenantry.dev/tenantry/app/migrations"
)

// NewScheme returns a scheme with the built-in kinds and Tenantry's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(tenantryv1.AddToScheme(s))
	return s
}

// CacheOptions keeps the operator's informers to what it needs: of Secrets, only those it created
// itself (the database Secrets are read uncached, when due), so memory does not grow with every Secret
// of the cluster.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedBy})},
	}}
}

// Config is what the operator's controllers need to be set up.
type Config struct {
	MaxConcurrentReconciles int
}

// Setup registers every controller of the operator with mgr and returns the databases they share,
// which the caller closes when the manager stops.
func Setup(mgr ctrl.Manager, cfg Config) (*Databases, error) {
	dbs := &Databases{Reader: mgr.GetAPIReader()}
	tenants := &TenantReconciler{
		Client:                  mgr.GetClient(),
		Scheme:                  mgr.GetScheme(),
		Databases:               dbs,
		Migrations:              migrations.FS(),
		TargetVersion:           migrations.Latest,
		MaxConcurrentReconciles: cfg.MaxConcurrentReconciles,
	}
	if err := tenants.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Tenant controller: %w", err)
	}
	return dbs, nil
}

// TuneRESTConfig raises the client's default rate limits, which throttle an operator of thousands of
// tenants long before the API server would.
func TuneRESTConfig(cfg *rest.Config, qps float32, burst int) {
	cfg.QPS = qps
	cfg.Burst = burst
}
