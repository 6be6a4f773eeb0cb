package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeletionPolicy says what happens to a tenant's data when its Tenant is deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type DeletionPolicy string

const (
	// DeletionPolicyRetain takes the tenant out of service and routing and keeps its schema, data and
	// role; no app login may act as the role any more, and the registry keeps recording whose they are.
	// Creating a Tenant of the same name in the same namespace again brings the data back.
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyDelete drops the tenant's schema (with all its data), its role and its registry row.
	DeletionPolicyDelete DeletionPolicy = "Delete"
)

// AppRef names the ExpenseApp that serves a tenant.
type AppRef struct {
	// name of the ExpenseApp, in the Tenant's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// Branding is how the app presents itself to the tenant's users.
type Branding struct {
	// primaryColor is the accent colour of the app's pages, as "#rrggbb".
	// +kubebuilder:validation:Pattern=`^#[0-9a-fA-F]{6}$`
	// +optional
	PrimaryColor string `json:"primaryColor,omitempty"`

	// logoURL is an http(s) URL of the logo shown on every page.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="logoURL must be an absolute http or https URL"
	// +optional
	LogoURL string `json:"logoURL,omitempty"`
}

// Settings are the tenant's business rules.
type Settings struct {
	// currency is the ISO 4217 code every amount of the tenant is kept and shown in, e.g. "EUR".
	// +kubebuilder:validation:Pattern=`^[A-Z]{3}$`
	// +kubebuilder:default=USD
	// +optional
	Currency string `json:"currency,omitempty"`

	// approvalThreshold is the amount, in minor units of the currency (cents for EUR), above which an
	// expense waits for an admin's approval. 0 means every expense needs approval; unset means none does.
	// +kubebuilder:validation:Minimum=0
	// +optional
	ApprovalThreshold *int64 `json:"approvalThreshold,omitempty"`
}

// Admin describes the tenant's first administrator, created once when the tenant is provisioned.
type Admin struct {
	// email is the admin's login. Their generated password is written to the Secret "<tenant>-admin".
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:Pattern=`^[^@\s]+@[^@\s]+\.[^@\s]+$`
	Email string `json:"email"`
}

// TenantSource is where a new tenant's data comes from: a backup, or another tenant.
// +kubebuilder:validation:XValidation:rule="has(self.backup) != has(self.tenant)",message="source names either a backup or a tenant"
type TenantSource struct {
	// backup restores a Completed Backup of this namespace into the new tenant: its schema is made at
	// the backup's schema version, filled with the backup's rows, then migrated to the release's. The
	// backup's users come with it; the tenant also gets its own first admin (spec.admin).
	// +optional
	Backup *LocalRef `json:"backup,omitempty"`

	// tenant clones another Tenant of this namespace: the new tenant's tables are filled from one
	// consistent snapshot of the source's. Its users, sessions and API tokens are never copied, nor
	// any table whose rows refer to them (expenses); the clone gets its own first admin.
	// +optional
	Tenant *CloneSource `json:"tenant,omitempty"`
}

// CloneSource is the Tenant a clone copies, and what of it.
// +kubebuilder:validation:XValidation:rule="!(has(self.schemaOnly) && self.schemaOnly && has(self.tables))",message="a schemaOnly clone copies no tables"
type CloneSource struct {
	// name of the Tenant to copy, in the same namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// tables to copy; empty copies every table that can be (all but users, sessions and API tokens,
	// and the tables whose rows refer to them: departments, funding_accounts and budgets).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Tables []string `json:"tables,omitempty"`

	// schemaOnly copies no rows: the clone starts with the release's empty schema.
	// +optional
	SchemaOnly bool `json:"schemaOnly,omitempty"`
}

// TenantSpec is the desired state of one customer of the app.
// +kubebuilder:validation:XValidation:rule="has(self.source) == has(oldSelf.source)",message="source is set when a Tenant is created, or never"
type TenantSpec struct {
	// appRef names the ExpenseApp (in the same namespace) that serves this tenant. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="appRef is immutable"
	AppRef AppRef `json:"appRef"`

	// displayName is the tenant's name as its users see it. Defaults to the Tenant's name.
	// +kubebuilder:validation:MaxLength=200
	// +optional
	DisplayName string `json:"displayName,omitempty"`

	// hosts are the DNS names the tenant is served on; the first is its primary host, used in its URL.
	// Lower-case names only, no scheme, port, path or wildcard, and no IP address (the last label is
	// not all digits). A host can belong to one tenant only.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`
	// +kubebuilder:validation:XValidation:rule="self.all(h, !h.matches('(^|[.])[0-9]+$'))",message="a host is a DNS name, not an IP address: its last label cannot be all digits"
	Hosts []string `json:"hosts"`

	// branding is how the app presents itself to this tenant's users.
	// +optional
	Branding Branding `json:"branding,omitempty"`

	// settings are the tenant's business rules.
	// +optional
	Settings Settings `json:"settings,omitempty"`

	// admin is the tenant's first administrator.
	Admin Admin `json:"admin"`

	// suspend takes the tenant offline: the app answers its hosts with 503 and keeps its data.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// shard pins the tenant to one of its ExpenseApp's shards ("home" is spec.database); empty lets the
	// app's placement policy choose. The shard chosen is recorded in status.shard.
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Shard string `json:"shard,omitempty"`

	// deletionPolicy says what deleting the Tenant does to its data: Retain (default) keeps the schema,
	// data and role, reachable by nobody until a Tenant of the same name returns in this namespace;
	// Delete drops them.
	// +kubebuilder:default=Retain
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// source fills the new tenant's schema before it goes live, once, when the Tenant is created. It
	// cannot be added, changed or removed afterwards.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable"
	// +optional
	Source *TenantSource `json:"source,omitempty"`
}

// TenantStatus is the observed state of a tenant.
type TenantStatus struct {
	// conditions: Ready is the summary; Reconciling and Stalled appear while work is under way or
	// blocked; SchemaReady, MigrationsApplied, Registered, Routed and AdminReady report each step;
	// SchemaDrift says whether the schema differs from the release's (it never makes a tenant less Ready).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// schema is the PostgreSQL schema holding the tenant's data, derived once from the tenant's identity
	// (database, namespace, name) and never changed. Output only: the operator acts on the schema its
	// registry records for the Tenant, never on this field.
	// +optional
	Schema string `json:"schema,omitempty"`

	// shard is the ExpenseApp shard that holds the tenant's schema ("home": spec.database). It is chosen
	// once, by spec.shard or the app's placement policy, and never changes by itself.
	// +optional
	Shard string `json:"shard,omitempty"`
	// node is the Citus worker ("host:port") that holds the tenant's schema, when the app's database is a
	// Citus coordinator with schema-based sharding; it follows the schema when a rebalance moves it.
	// +optional
	Node string `json:"node,omitempty"`
	// schemaVersion is the last migration applied to the tenant's schema.
	// +optional
	SchemaVersion int64 `json:"schemaVersion,omitempty"`

	// url is where the tenant's users reach the app: its primary host.
	// +optional
	URL string `json:"url,omitempty"`

	// adminSecretName is the Secret holding the first admin's email, password and url.
	// +optional
	AdminSecretName string `json:"adminSecretName,omitempty"`

	// usage is what the tenant uses, for billing and capacity planning: measured in its schema once the
	// tenant is Ready, and again every --usage-interval of the operator (30 minutes by default).
	// +optional
	Usage *TenantUsage `json:"usage,omitempty"`

	// drift is how the tenant's schema differs from the one the release's migrations make: compared once
	// the tenant is Ready and after every migration; then every --drift-interval of the operator (an hour
	// by default) its ExpenseApp compares its whole fleet, and writes here only what changed. The
	// SchemaDrift condition sums it up. See docs/drift.md.
	// +optional
	Drift *TenantDrift `json:"drift,omitempty"`
}

// TenantDrift is the last comparison of a tenant's schema with the release's shape: its tables,
// columns, indexes, constraints, sequences, triggers, functions, views, rules, policies, types, owners
// and grants.
type TenantDrift struct {
	// checkedAt is when the schema was compared with this outcome. Later comparisons that find the
	// schema unchanged write nothing: the ExpenseApp's status.drift.checkedAt says when they ran.
	CheckedAt metav1.Time `json:"checkedAt"`
	// schemaVersion is the version the schema was at, whose shape it was compared with.
	SchemaVersion int64 `json:"schemaVersion"`
	// differences is the number of objects that differ: extra, missing or changed.
	Differences int32 `json:"differences"`
	// planted is how many of them are code the release does not have (a function, view, trigger, rule,
	// policy or operator, extra or changed), which runs when the app uses the schema.
	// +optional
	Planted int32 `json:"planted,omitempty"`
	// details says what differs, one object per line, planted code first (at most 20).
	// +optional
	Details []string `json:"details,omitempty"`
	// fingerprint identifies what was compared: the release's migrations and a digest of the schema's
	// catalog rows. While both stay the same, so does the outcome, and the schema is not read again.
	// +optional
	Fingerprint string `json:"fingerprint,omitempty"`
	// repaired is the value of the tenantry.dev/repair-schema annotation last acted on, and
	// repairMessage what that repair did.
	// +optional
	Repaired string `json:"repaired,omitempty"`
	// +optional
	RepairMessage string `json:"repairMessage,omitempty"`
}

// TenantUsage is a tenant's use of the app, as measured in its schema.
type TenantUsage struct {
	// users is the number of the tenant's user accounts, active or not.
	Users int64 `json:"users"`
	// activeUsers is the number of those that may sign in.
	ActiveUsers int64 `json:"activeUsers"`
	// expenses is the number of the tenant's expenses, in every state.
	Expenses int64 `json:"expenses"`
	// schemaBytes is the disk space of the tenant's schema: its tables, indexes and TOAST data.
	SchemaBytes int64 `json:"schemaBytes"`
	// measuredAt is when these figures were taken.
	MeasuredAt metav1.Time `json:"measuredAt"`
}

// Tenant is one customer of the app: a schema with its migrations applied, a database role, host
// routing and a first admin user.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=tenantry
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 240",message="a Tenant name is at most 240 characters, leaving room for the objects named after it"
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=`.spec.hosts[0]`
// +kubebuilder:printcolumn:name="Schema",type=string,JSONPath=`.status.schema`
// +kubebuilder:printcolumn:name="Shard",type=string,JSONPath=`.status.shard`
// +kubebuilder:printcolumn:name="Node",type=string,priority=1,JSONPath=`.status.node`
// +kubebuilder:printcolumn:name="Version",type=integer,JSONPath=`.status.schemaVersion`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Users",type=integer,priority=1,JSONPath=`.status.usage.users`
// +kubebuilder:printcolumn:name="Expenses",type=integer,priority=1,JSONPath=`.status.usage.expenses`
// +kubebuilder:printcolumn:name="Size",type=integer,priority=1,JSONPath=`.status.usage.schemaBytes`
// +kubebuilder:printcolumn:name="Drift",type=integer,priority=1,JSONPath=`.status.drift.differences`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Tenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the tenant.
	Spec TenantSpec `json:"spec"`
	// status is the observed state of the tenant.
	// +optional
	Status TenantStatus `json:"status,omitempty"`
}

// TenantList is a list of Tenants.
// +kubebuilder:object:root=true
type TenantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tenant `json:"items"`
}

// DisplayNameOrName returns spec.displayName, or the Tenant's name when that is empty.
func (t *Tenant) DisplayNameOrName() string {
	if t.Spec.DisplayName != "" {
		return t.Spec.DisplayName
	}
	return t.Name
}
