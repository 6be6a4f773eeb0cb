package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tenantryv1 "tenantry.dev/tenantry/api/v1alpha1"
)

// The API server itself rejects invalid Tenants, with a message naming the field.
func TestTenantValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	negative := int64(-1)
	tests := []struct {
		name   string
		mutate func(*tenantryv1.Tenant)
		want   string // part of the API server's message
	}{
		{"upper-case host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"Acme.example.com"} }, "spec.hosts[0]"},
		{"wildcard host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"*.example.com"} }, "spec.hosts[0]"},
		{"host with scheme", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"https://acme.example.com"} }, "spec.hosts[0]"},
		{"host with port", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.example.com:8080"} }, "spec.hosts[0]"},
		{"host with path", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.example.com/app"} }, "spec.hosts[0]"},
		{"malformed host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme..example.com"} }, "spec.hosts[0]"},
		{"host label ending in a dash", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme-.example.com"} }, "spec.hosts[0]"},
		{"duplicate hosts", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"a.example.com", "a.example.com"} }, "Duplicate value"},
		{"IPv4 address as host", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"a.example.com", "10.0.0.1"} }, "not an IP address"},
		{"numeric top-level label", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{"acme.123"} }, "not an IP address"},
		{"empty host list", func(t *tenantryv1.Tenant) { t.Spec.Hosts = []string{} }, "spec.hosts"},
		{"colour not #rrggbb", func(t *tenantryv1.Tenant) { t.Spec.Branding.PrimaryColor = "blue" }, "spec.branding.primaryColor"},
		{"short colour", func(t *tenantryv1.Tenant) { t.Spec.Branding.PrimaryColor = "#fff" }, "spec.branding.primaryColor"},
		{"logo over ftp", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "ftp://acme.com/logo.png" }, "logoURL must be an absolute http or https URL"},
		{"javascript logo", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "javascript:alert(1)" }, "logoURL must be an absolute http or https URL"},
		{"relative logo", func(t *tenantryv1.Tenant) { t.Spec.Branding.LogoURL = "/logo.png" }, "logoURL must be an absolute http or https URL"},
		{"lower-case currency", func(t *tenantryv1.Tenant) { t.Spec.Settings.Currency = "eur" }, "spec.settings.currency"},
		{"four-letter currency", func(t *tenantryv1.Tenant) { t.Spec.Settings.Currency = "EURO" }, "spec.settings.currency"},
		{"negative threshold", func(t *tenantryv1.Tenant) { t.Spec.Settings.ApprovalThreshold = &negative }, "spec.settings.approvalThreshold"},
		{"malformed admin email", func(t *tenantryv1.Tenant) { t.Spec.Admin.Email = "finance.acme.com" }, "spec.admin.email"},
		{"admin email with spaces", func(t *tenantryv1.Tenant) { t.Spec.Admin.Email = "fin ance@acme.com" }, "spec.admin.email"},
		{"unknown deletion policy", func(t *tenantryv1.Tenant) { t.Spec.DeletionPolicy = "Orphan" }, "spec.deletionPolicy"},
		{"no app", func(t *tenantryv1.Tenant) { t.Spec.AppRef.Name = "" }, "spec.appRef.name"},
		{"name too long", func(t *tenantryv1.Tenant) { t.Name = strings.Repeat("n", 241) }, "at most 240 characters"},
		{"source naming nothing", func(t *tenantryv1.Tenant) { t.Spec.Source = &tenantryv1.TenantSource{} }, "source names either a backup or a tenant"},
		{"source naming a backup and a tenant", func(t *tenantryv1.Tenant) {
			t.Spec.Source = &tenantryv1.TenantSource{Backup: &tenantryv1.LocalRef{Name: "b"}, Tenant: &tenantryv1.CloneSource{Name: "a"}}
		}, "source names either a backup or a tenant"},
		{"schema-only clone with tables", func(t *tenantryv1.Tenant) {
			t.Spec.Source = &tenantryv1.TenantSource{Tenant: &tenantryv1.CloneSource{Name: "a", SchemaOnly: true, Tables: []string{"departments"}}}
		}, "a schemaOnly clone copies no tables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := f.tenant("invalid", "ok.example.com")
			tt.mutate(tn)
			err := k8s.Create(ctx, tn, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("Create = %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}

	// A valid one passes, and its appRef cannot change afterwards.
	tn := f.tenant("valid", "valid.example.com")
	if err := k8s.Create(ctx, tn); err != nil {
		t.Fatalf("valid Tenant rejected: %v", err)
	}
	patch := client.MergeFrom(tn.DeepCopy())
	tn.Spec.AppRef.Name = "other"
	err := k8s.Patch(ctx, tn, patch)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "appRef is immutable") {
		t.Fatalf("changing appRef: %v, want Invalid with 'appRef is immutable'", err)
	}
}

// The API server refuses an ExpenseApp field that cannot work, as strictly as a Tenant's, with a message
// naming the field.
func TestExpenseAppValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		mutate func(*tenantryv1.ExpenseApp)
		want   string // part of the API server's message
	}{
		{"ClusterDatabase name that is no Kubernetes name", func(a *tenantryv1.ExpenseApp) { a.Spec.Database.ClusterDatabase = "Main_DB" },
			"spec.database.clusterDatabase"},
		{"no database at all", func(a *tenantryv1.ExpenseApp) { a.Spec.Database.ClusterDatabase = "" },
			"name the database by exactly one of clusterDatabase and secretRef"},
		{"database named twice", func(a *tenantryv1.ExpenseApp) { a.Spec.Database.SecretRef = &tenantryv1.SecretKeyRef{Name: "db"} },
			"name the database by exactly one of clusterDatabase and secretRef"},
		{"Secret name that is no Kubernetes name", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Database = tenantryv1.DatabaseSpec{SecretRef: &tenantryv1.SecretKeyRef{Name: "DB_Secret"}}
		}, "spec.database.secretRef.name"},
		{"Secret key with a slash", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Database = tenantryv1.DatabaseSpec{SecretRef: &tenantryv1.SecretKeyRef{Name: "db", Key: "a/b"}}
		}, "spec.database.secretRef.key"},
		{"backup path with a dot-dot segment", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Backup = &tenantryv1.AppBackupSpec{ObjectStore: tenantryv1.ObjectStore{DestinationPath: "s3://bucket/a/../b",
				Credentials: tenantryv1.LocalSecretRef{SecretName: "s3"}}}
		}, "destinationPath has no empty, . or .. segment"},
		{"backup path that is no s3 URL", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Backup = &tenantryv1.AppBackupSpec{ObjectStore: tenantryv1.ObjectStore{DestinationPath: "https://bucket/a",
				Credentials: tenantryv1.LocalSecretRef{SecretName: "s3"}}}
		}, "spec.backup.objectStore.destinationPath"},
		{"backup endpoint with a path", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Backup = &tenantryv1.AppBackupSpec{ObjectStore: tenantryv1.ObjectStore{DestinationPath: "s3://bucket",
				EndpointURL: "http://s3.example.com/x", Credentials: tenantryv1.LocalSecretRef{SecretName: "s3"}}}
		}, "spec.backup.objectStore.endpointURL"},
		{"shard Secret name with spaces", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Shards = []tenantryv1.ShardSpec{{Name: "eu", SecretRef: &tenantryv1.SecretKeyRef{Name: "eu db"}}}
		}, "spec.shards[0].secretRef.name"},
		{"shard without a database", func(a *tenantryv1.ExpenseApp) { a.Spec.Shards = []tenantryv1.ShardSpec{{Name: "eu"}} },
			"name the shard's database by exactly one of clusterDatabase and secretRef"},
		{"shard named home", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Shards = []tenantryv1.ShardSpec{{Name: "home", ClusterDatabase: "db"}}
		}, `the shard name "home" is spec.database's`},
		{"negative replicas", func(a *tenantryv1.ExpenseApp) { a.Spec.Replicas = ptr.To(int32(-1)) }, "spec.replicas"},
		{"replicas beyond reason", func(a *tenantryv1.ExpenseApp) { a.Spec.Replicas = ptr.To(int32(100000)) }, "spec.replicas"},
		{"image with a space", func(a *tenantryv1.ExpenseApp) { a.Spec.Image = "tenantry app:v1" }, "image must not contain spaces"},
		{"IngressClass that is no name", func(a *tenantryv1.ExpenseApp) { a.Spec.Ingress.ClassName = "Nginx!" }, "spec.ingress.className"},
		{"annotation key that is no key", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Ingress.Annotations = map[string]string{"bad key": "x"}
		}, "each annotation key must be a Kubernetes annotation key"},
		{"TLS Secret that is no name", func(a *tenantryv1.ExpenseApp) { a.Spec.Ingress.TLS.SecretName = "-tls" }, "spec.ingress.tls.secretName"},
		{"Gateway name that is no name", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Gateway = &tenantryv1.GatewaySpec{ParentRefs: []tenantryv1.GatewayParentRef{{Name: "Main_Gateway"}}}
		}, "spec.gateway.parentRefs[0].name"},
		{"Gateway namespace that is no namespace", func(a *tenantryv1.ExpenseApp) {
			a.Spec.Gateway = &tenantryv1.GatewaySpec{ParentRefs: []tenantryv1.GatewayParentRef{{Name: "gw", Namespace: "infra.system"}}}
		}, "spec.gateway.parentRefs[0].namespace"},
		{"no Gateway at all", func(a *tenantryv1.ExpenseApp) { a.Spec.Gateway = &tenantryv1.GatewaySpec{} }, "spec.gateway.parentRefs"},
		{"negative concurrent migrations", func(a *tenantryv1.ExpenseApp) { a.Spec.Migrations.MaxConcurrent = -1 }, "spec.migrations.maxConcurrent"},
		{"too many concurrent migrations", func(a *tenantryv1.ExpenseApp) { a.Spec.Migrations.MaxConcurrent = 1000 }, "spec.migrations.maxConcurrent"},
		{"negative failure budget", func(a *tenantryv1.ExpenseApp) { a.Spec.Migrations.MaxFailures = -1 }, "spec.migrations.maxFailures"},
		{"canary beyond reason", func(a *tenantryv1.ExpenseApp) { a.Spec.Migrations.Canary = 100000 }, "spec.migrations.canary"},
		{"unknown placement policy", func(a *tenantryv1.ExpenseApp) { a.Spec.Placement.Policy = "Random" }, "spec.placement.policy"},
		{"unknown Citus routing", func(a *tenantryv1.ExpenseApp) { a.Spec.Database.CitusRouting = "Direct" }, "spec.database.citusRouting"},
		{"network policy open to nobody", func(a *tenantryv1.ExpenseApp) {
			a.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{Enabled: true}
		}, "networkPolicy.ingressNamespaces must name"},
		{"ingress namespace that is no namespace", func(a *tenantryv1.ExpenseApp) {
			a.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{Enabled: true, IngressNamespaces: []string{"Ingress Nginx"}}
		}, "spec.networkPolicy.ingressNamespaces[0]"},
		{"database port zero", func(a *tenantryv1.ExpenseApp) {
			a.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{IngressNamespaces: []string{"ingress"}, DatabasePorts: []int32{0}}
		}, "spec.networkPolicy.databasePorts[0]"},
		{"database port past 65535", func(a *tenantryv1.ExpenseApp) {
			a.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{IngressNamespaces: []string{"ingress"}, DatabasePorts: []int32{70000}}
		}, "spec.networkPolicy.databasePorts[0]"},
		{"malformed database CIDR", func(a *tenantryv1.ExpenseApp) {
			a.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{IngressNamespaces: []string{"ingress"}, DatabaseCIDRs: []string{"10.0.0.0/33"}}
		}, "each of databaseCIDRs must be a CIDR"},
		{"move deadline under a second", func(a *tenantryv1.ExpenseApp) { a.Spec.MoveDeadline = &metav1.Duration{Duration: time.Millisecond} },
			"moveDeadline must be between 1s and 168h"},
		{"move deadline past a week", func(a *tenantryv1.ExpenseApp) { a.Spec.MoveDeadline = &metav1.Duration{Duration: 200 * time.Hour} },
			"moveDeadline must be between 1s and 168h"},
		{"malformed trusted proxy", func(a *tenantryv1.ExpenseApp) { a.Spec.TrustedProxies = []string{"10.0.0.0/8", "ingress"} },
			"each of trustedProxies must be a CIDR"},
		{"trusted proxy with a bad prefix", func(a *tenantryv1.ExpenseApp) { a.Spec.TrustedProxies = []string{"192.168.1.0/40"} },
			"each of trustedProxies must be a CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := f.app.DeepCopy()
			app.ObjectMeta = metav1.ObjectMeta{Name: "invalid", Namespace: f.ns}
			tt.mutate(app)
			err := k8s.Create(ctx, app, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("Create = %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}

	// What works passes: every field set to something that can work.
	app := f.app.DeepCopy()
	app.ObjectMeta = metav1.ObjectMeta{Name: "valid", Namespace: f.ns}
	app.Spec.Replicas = ptr.To(int32(3))
	app.Spec.Ingress = tenantryv1.IngressSpec{ClassName: "nginx", Annotations: map[string]string{
		"cert-manager.io/cluster-issuer": "letsencrypt", "nginx.ingress.kubernetes.io/proxy-body-size": "8m"},
		TLS: tenantryv1.IngressTLS{Enabled: true, SecretName: "wildcard.example.com"}}
	app.Spec.TrustedProxies = []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8"}
	app.Spec.NetworkPolicy = &tenantryv1.NetworkPolicySpec{Enabled: true, IngressNamespaces: []string{"ingress-nginx"},
		DatabasePorts: []int32{5432, 6432}, DatabaseCIDRs: []string{"10.1.0.0/16"}}
	if err := k8s.Create(ctx, app, client.DryRunAll); err != nil {
		t.Fatalf("valid ExpenseApp rejected: %v", err)
	}
}
