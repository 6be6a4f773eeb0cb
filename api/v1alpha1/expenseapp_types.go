package v1alpha1

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SecretKeyRef names a Secret and a key in it; the field that holds it says in which namespace.
type SecretKeyRef struct {
	// name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// key in the Secret holding the value.
	// +kubebuilder:default=uri
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +optional
	Key string `json:"key,omitempty"`
}

// DatabaseSpec says how the operator reaches the shared PostgreSQL database.
// +kubebuilder:validation:XValidation:rule="has(self.clusterDatabase) != has(self.secretRef)",message="name the database by exactly one of clusterDatabase and secretRef"
type DatabaseSpec struct {
	// clusterDatabase names the ClusterDatabase (declared by the platform team) that is the home
	// database: it must select this namespace and allow the use Home. The operator reads its admin
	// Secret; this namespace never holds it. The app gets a least-privilege login of its own.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ClusterDatabase string `json:"clusterDatabase,omitempty"`
	// secretRef names a Secret of this namespace whose key (default "uri") holds an admin connection
	// string, e.g. postgres://tenantry:...@db:5432/expenses, a login able to create roles and schemas.
	// Only for a single-team install: whoever can read Secrets here owns every tenant of that database,
	// of every namespace. The operator refuses it (Stalled, NotAllowed) unless it was started with
	// --namespaced-database-secrets.
	// +optional
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
	// citusRouting says where the app sends a tenant's transactions when the database is a Citus
	// coordinator (status.citus): Workers sends each straight to the worker that holds the tenant's
	// schema (read from Citus's metadata every 2 s), so it runs there on a pooled connection; the
	// workers' pg_hba.conf must then admit the app's login from the app's pods. Coordinator sends
	// everything to the coordinator, which opens a connection to the worker for every transaction: for
	// when the workers cannot be reached from the app. Ignored on plain PostgreSQL.
	// +kubebuilder:validation:Enum=Workers;Coordinator
	// +kubebuilder:default=Workers
	// +optional
	CitusRouting CitusRouting `json:"citusRouting,omitempty"`
}

// CitusRouting is where the app sends tenants' transactions on Citus.
type CitusRouting string

const (
	// CitusRoutingWorkers sends each tenant's transactions to the worker that holds its schema.
	CitusRoutingWorkers CitusRouting = "Workers"
	// CitusRoutingCoordinator sends every transaction to the coordinator.
	CitusRoutingCoordinator CitusRouting = "Coordinator"
)

// HomeShard is the name of the shard that spec.database is: the home database, which holds the registry
// and routing of every tenant, and tenants too.
const HomeShard = "home"

// The app's own database login, which the operator writes for every ExpenseApp into the Secret
// "<app>-app-db" of its namespace: key "uri" holds the connection string of the home database, key
// "shards" those of the other shards, as a JSON object of shard name to connection string. The login
// may act as each of the app's tenants (SET ROLE) and may read the registry; it is what the app's pods
// and `kubectl tenantry psql` connect as.
const (
	AppSecretSuffix    = "-app-db"
	AppSecretURIKey    = "uri"
	AppSecretShardsKey = "shards"
)

// AppSecretName is the Secret holding the app's own database login.
func (a *ExpenseApp) AppSecretName() string { return a.Name + AppSecretSuffix }

// AppLoginURIs reads the app's connection strings, by shard, from its Secret's data.
func AppLoginURIs(data map[string][]byte) map[string]string {
	uris := map[string]string{}
	if raw := data[AppSecretShardsKey]; len(raw) > 0 {
		_ = json.Unmarshal(raw, &uris) // written by the operator; anything else counts as none
	}
	uris[HomeShard] = string(data[AppSecretURIKey])
	return uris
}

// ShardSpec is one more PostgreSQL database that holds tenant schemas.
// +kubebuilder:validation:XValidation:rule="has(self.clusterDatabase) != has(self.secretRef)",message="name the shard's database by exactly one of clusterDatabase and secretRef"
type ShardSpec struct {
	// name of the shard, as Tenants' spec.shard and status.shard say it. "home" is spec.database's.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// clusterDatabase names the ClusterDatabase that is the shard's database: it must select this
	// namespace and allow the use Shard. It may be another database of the home database's server or
	// another server.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ClusterDatabase string `json:"clusterDatabase,omitempty"`
	// secretRef names a Secret of this namespace holding an admin connection string of the shard's
	// database, as spec.database.secretRef does: only for single-team installs (--namespaced-database-secrets).
	// +optional
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
}

// PlacementPolicy chooses the shard of a Tenant that names none.
// +kubebuilder:validation:Enum=LeastTenants;Home
type PlacementPolicy string

const (
	// PlacementLeastTenants places a new tenant on the shard (home included) that holds the fewest.
	PlacementLeastTenants PlacementPolicy = "LeastTenants"
	// PlacementHome places new tenants on the home database; only a Tenant's spec.shard puts it elsewhere.
	PlacementHome PlacementPolicy = "Home"
)

// PlacementSpec says where new tenants go.
type PlacementSpec struct {
	// policy chooses the shard of a Tenant without spec.shard. A tenant, once placed, stays where it is
	// (status.shard) until its spec.shard says otherwise.
	// +kubebuilder:default=LeastTenants
	// +optional
	Policy PlacementPolicy `json:"policy,omitempty"`
}

// IngressTLS configures TLS on the tenants' Ingresses.
type IngressTLS struct {
	// enabled turns TLS on: every tenant Ingress lists its hosts under spec.tls and tenant URLs use https.
	// +optional
	Enabled bool `json:"enabled,omitempty"`
	// secretName is the TLS Secret every tenant Ingress uses (e.g. a wildcard certificate). Empty means
	// one Secret per tenant, "<tenant>-tls", as cert-manager creates from an Ingress annotation.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// IngressSpec shapes the Ingress the operator creates for each Tenant.
type IngressSpec struct {
	// className is the IngressClass of every tenant Ingress. Empty uses the cluster's default class.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	ClassName string `json:"className,omitempty"`
	// annotations are copied onto every tenant Ingress (e.g. cert-manager.io/cluster-issuer).
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$'))",message="each annotation key must be a Kubernetes annotation key: an optional DNS prefix and '/', then a name"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// tls configures TLS on tenant Ingresses.
	// +optional
	TLS IngressTLS `json:"tls,omitempty"`
}

// GatewayParentRef names a Gateway (or a listener of one) that tenant HTTPRoutes attach to.
type GatewayParentRef struct {
	// name of the Gateway.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// namespace of the Gateway; empty is the ExpenseApp's. The Gateway's listeners must allow routes
	// from the ExpenseApp's namespace (allowedRoutes).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// sectionName is the name of one listener of the Gateway; empty attaches to every listener that
	// accepts the route.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	SectionName string `json:"sectionName,omitempty"`
}

// GatewaySpec routes tenants through the Gateway API: an HTTPRoute per Tenant instead of an Ingress.
type GatewaySpec struct {
	// parentRefs are the Gateways every tenant HTTPRoute attaches to.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	ParentRefs []GatewayParentRef `json:"parentRefs"`
	// https says the Gateway's listeners terminate TLS for the tenants' hosts, so tenant URLs use
	// https. (Certificates belong to the Gateway's listeners, not to the routes.)
	// +optional
	HTTPS bool `json:"https,omitempty"`
}

// NetworkPolicySpec restricts what reaches the app's pods and what they reach.
type NetworkPolicySpec struct {
	// enabled makes the operator keep a NetworkPolicy "<app>" for the app's pods: ingress only from the
	// namespaces below, egress only to the database ports and DNS. (The cluster's network plugin must
	// enforce NetworkPolicies.)
	Enabled bool `json:"enabled"`
	// ingressNamespaces are the namespaces whose pods may reach the app's HTTP port: the ingress
	// controller's or the Gateway's.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	// +optional
	IngressNamespaces []string `json:"ingressNamespaces,omitempty"`
	// metricsNamespaces are the namespaces whose pods may scrape the app's metrics port (Prometheus's).
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +listType=set
	// +optional
	MetricsNamespaces []string `json:"metricsNamespaces,omitempty"`
	// databasePorts are the TCP ports the app may connect to: PostgreSQL's, or PgBouncer's.
	// +kubebuilder:default={5432}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +listType=set
	// +optional
	DatabasePorts []int32 `json:"databasePorts,omitempty"`
	// databaseCIDRs, when set, also restrict those connections to these addresses (the database
	// servers'); empty allows the database ports on any address.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="each of databaseCIDRs must be a CIDR, e.g. 10.0.0.0/16"
	// +listType=set
	// +optional
	DatabaseCIDRs []string `json:"databaseCIDRs,omitempty"`
}

// MigrationsSpec bounds how tenant schemas are migrated.
type MigrationsSpec struct {
	// maxConcurrent is how many tenant schemas are migrated at once.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=8
	// +optional
	MaxConcurrent int32 `json:"maxConcurrent,omitempty"`
	// canary is how many tenants are migrated first, alone, when a release brings new migrations; the
	// rest of the fleet follows once they have succeeded.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=1
	// +optional
	Canary int32 `json:"canary,omitempty"`
	// maxFailures is the failure budget of a fleet migration: once more tenants than this fail, the
	// rollout halts until the failures are fixed.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +kubebuilder:default=0
	// +optional
	MaxFailures int32 `json:"maxFailures,omitempty"`
}

// ExpenseAppSpec is the desired state of one installation of the expense app.
type ExpenseAppSpec struct {
	// database says how the operator reaches the shared database.
	Database DatabaseSpec `json:"database"`

	// shards are more PostgreSQL databases for tenant schemas, beside the home database (spec.database,
	// shard "home"), which keeps the registry and routing of every tenant. The app gets a login on each
	// and keeps one pool per shard. A shard that still holds tenants cannot be removed: the operator
	// keeps serving it and says so in the Stalled condition until its tenants have moved.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(s, s.name != 'home')",message="the shard name \"home\" is spec.database's"
	// +listType=map
	// +listMapKey=name
	// +optional
	Shards []ShardSpec `json:"shards,omitempty"`

	// moveDeadline bounds a move between shards before its cut-over: the copy and the catch-up. A
	// move that has not cut over by then is abandoned (its subscription, publication and slot on the
	// source go, so the source keeps no WAL for it) and the Tenant is Stalled with MoveFailed, saying
	// so; it is tried again a minute later, unless spec.shard is set back.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('168h')",message="moveDeadline must be between 1s and 168h"
	// +optional
	MoveDeadline *metav1.Duration `json:"moveDeadline,omitempty"`

	// placement says where new tenants go.
	// +optional
	Placement PlacementSpec `json:"placement,omitempty"`

	// image is the app's container image. Empty runs the operator's default app image (its
	// --default-app-image flag; the Helm chart sets it to the app of the operator's own release).
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.contains(' ')",message="image must not contain spaces"
	// +optional
	Image string `json:"image,omitempty"`

	// replicas is the number of app pods.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=2
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// resources of each app container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// ingress shapes the Ingress created for each Tenant (unless gateway is set).
	// +optional
	Ingress IngressSpec `json:"ingress,omitempty"`

	// gateway, when set, routes each Tenant through a Gateway API HTTPRoute attached to these Gateways
	// instead of an Ingress, with the same hosts (the Gateway API CRDs must be installed). Setting or
	// removing it moves every tenant from one to the other: the operator deletes the routes it no longer
	// needs.
	// +optional
	Gateway *GatewaySpec `json:"gateway,omitempty"`

	// migrations bounds how tenant schemas are migrated.
	// +optional
	Migrations MigrationsSpec `json:"migrations,omitempty"`

	// trustedProxies are the addresses (CIDRs, or single IPs) of the proxies in front of the app, the
	// ingress controller's or the Gateway's pods: from them, the client of a request is the nearest
	// address in X-Forwarded-For that is not a trusted proxy itself, and sign-in limits count per client.
	// From anyone else X-Forwarded-For is ignored. Empty trusts no proxy: every client behind one then
	// shares its address, and so its sign-in limits.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) || isIP(self)",message="each of trustedProxies must be a CIDR, e.g. 10.0.0.0/8, or an IP address"
	// +listType=set
	// +optional
	TrustedProxies []string `json:"trustedProxies,omitempty"`

	// networkPolicy restricts the app's network traffic to what it needs.
	// +kubebuilder:validation:XValidation:rule="!self.enabled || (has(self.ingressNamespaces) && size(self.ingressNamespaces) > 0)",message="networkPolicy.ingressNamespaces must name the ingress controller's or Gateway's namespace, or no request reaches the app"
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// backup is where Backups of this app's tenants are written.
	// +optional
	Backup *AppBackupSpec `json:"backup,omitempty"`
}

// ExpenseAppStatus is the observed state of an installation of the app.
type ExpenseAppStatus struct {
	// conditions: Ready is the summary; Reconciling and Stalled appear while work is under way or blocked.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// readyReplicas is the number of app pods ready to serve.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// tenants is the number of Tenants that reference this app.
	// +optional
	Tenants int32 `json:"tenants,omitempty"`
	// readyTenants is the number of those Tenants that are Ready.
	// +optional
	ReadyTenants int32 `json:"readyTenants,omitempty"`
	// targetSchemaVersion is the tenant schema version this release of the operator and app needs.
	// +optional
	TargetSchemaVersion int64 `json:"targetSchemaVersion,omitempty"`
	// tenantsAtTarget is the number of Tenants whose schema is at targetSchemaVersion.
	// +optional
	TenantsAtTarget int32 `json:"tenantsAtTarget,omitempty"`
	// migration is the fleet migration's progress, "<tenants at target>/<tenants>", e.g. "734/1000".
	// +optional
	Migration string `json:"migration,omitempty"`
	// drift is the last comparison of every tenant's schema with the release (docs/drift.md).
	// +optional
	Drift *FleetDrift `json:"drift,omitempty"`
	// driftedTenants is the number of Tenants whose schema differs from the release's (their SchemaDrift
	// condition), and plantedTenants the number of those holding code the release does not have.
	// +optional
	DriftedTenants int32 `json:"driftedTenants,omitempty"`
	// +optional
	PlantedTenants int32 `json:"plantedTenants,omitempty"`
	// failedTenants names the Tenants whose migration failed (at most 20), for the failure budget.
	// +optional
	FailedTenants []string `json:"failedTenants,omitempty"`
	// shards lists every shard, home first: its tenants, whether the operator reaches it, and the
	// schema version all of its tenants are at.
	// +listType=map
	// +listMapKey=name
	// +optional
	Shards []ShardStatus `json:"shards,omitempty"`
	// citus says the home database is a Citus coordinator: tenant schemas are distributed schemas, each
	// on one worker (the Tenants' status.node). See docs/citus.md.
	// +optional
	Citus bool `json:"citus,omitempty"`
	// image is the app image the Deployment runs; it changes to spec.image only once every tenant is at
	// targetSchemaVersion.
	// +optional
	Image string `json:"image,omitempty"`
}

// FleetDrift is an ExpenseApp's last pass over its tenants' schemas, comparing each with the release.
type FleetDrift struct {
	// checkedAt is when the pass began; the next begins --drift-interval later.
	CheckedAt metav1.Time `json:"checkedAt"`
	// duration is how long the pass took.
	Duration metav1.Duration `json:"duration"`
	// compared is the number of tenants compared (Ready, at the release's version, not moving), and
	// readInFull how many of them were read in full because their catalog had changed since their last
	// comparison; the others were found unchanged from a digest alone.
	Compared int32 `json:"compared"`
	// +optional
	ReadInFull int32 `json:"readInFull,omitempty"`
	// failed is the number of tenants whose schema could not be read (their SchemaDrift is Unknown, with
	// reason CompareFailed): a session holding a lock on their tables, or the database away.
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// requested is the value of the tenantry.dev/check-drift annotation the pass was started for, if
	// one asked for it.
	// +optional
	Requested string `json:"requested,omitempty"`
	// error says why a shard could not be compared, if one could not; it is tried again at the next pass.
	// +optional
	Error string `json:"error,omitempty"`
}

// ShardStatus is what the operator sees of one shard.
type ShardStatus struct {
	// name of the shard.
	Name string `json:"name"`
	// clusterDatabase, or secretRef, is the database the shard was last reached with. A shard removed
	// from spec.shards while tenants remain on it is still reached through it.
	// +optional
	ClusterDatabase string `json:"clusterDatabase,omitempty"`
	// secretRef: see clusterDatabase.
	// +optional
	SecretRef *SecretKeyRef `json:"secretRef,omitempty"`
	// tenants is the number of Tenants placed on the shard.
	Tenants int32 `json:"tenants"`
	// reachable says the operator's last connection attempt to the shard succeeded.
	Reachable bool `json:"reachable"`
	// message says why the shard is not reachable, or what blocks its removal.
	// +optional
	Message string `json:"message,omitempty"`
	// schemaVersion is the lowest schema version of the shard's tenants (0 while it holds none).
	// +optional
	SchemaVersion int64 `json:"schemaVersion,omitempty"`
}

// ExpenseApp is one installation of the multi-tenant expense app: its shared database and the
// Deployment that serves every Tenant referencing it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=tenantry
// +kubebuilder:printcolumn:name="Tenants",type=integer,JSONPath=`.status.tenants`
// +kubebuilder:printcolumn:name="Ready Tenants",type=integer,JSONPath=`.status.readyTenants`
// +kubebuilder:printcolumn:name="Schema",type=integer,JSONPath=`.status.targetSchemaVersion`
// +kubebuilder:printcolumn:name="Migrated",type=string,JSONPath=`.status.migration`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ExpenseApp struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the installation.
	Spec ExpenseAppSpec `json:"spec"`
	// status is the observed state of the installation.
	// +optional
	Status ExpenseAppStatus `json:"status,omitempty"`
}

// ExpenseAppList is a list of ExpenseApps.
// +kubebuilder:object:root=true
type ExpenseAppList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExpenseApp `json:"items"`
}

// KeyOrDefault is the key that holds the connection string: key, or "uri".
func (s SecretKeyRef) KeyOrDefault() string {
	if s.Key != "" {
		return s.Key
	}
	return "uri"
}
