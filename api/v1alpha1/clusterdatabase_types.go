package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DatabaseUse is what an ExpenseApp may use a ClusterDatabase as.
// +kubebuilder:validation:Enum=Home;Shard
type DatabaseUse string

const (
	// DatabaseUseHome lets an ExpenseApp's spec.database name the database: its registry, its routing and
	// its tenants.
	DatabaseUseHome DatabaseUse = "Home"
	// DatabaseUseShard lets an ExpenseApp's spec.shards name the database, for tenant schemas only.
	DatabaseUseShard DatabaseUse = "Shard"
)

// ClusterDatabaseSpec declares one PostgreSQL database, who may use it and as what.
type ClusterDatabaseSpec struct {
	// secretRef names a Secret in the operator's own namespace (the one it runs in, or its
	// --platform-namespace) whose key (default "uri") holds an admin connection string of the database,
	// e.g. postgres://tenantry:...@db:5432/expenses, a login able to create roles and schemas (a
	// CloudNativePG cluster's superuser Secret, copied there). No namespace but the operator's ever holds
	// it: ExpenseApps name the ClusterDatabase, not the Secret.
	SecretRef SecretKeyRef `json:"secretRef"`
	// namespaceSelector selects the namespaces whose ExpenseApps may use the database, by their labels
	// (e.g. matchLabels: {kubernetes.io/metadata.name: shop} for one namespace). {} selects every
	// namespace. An ExpenseApp of a namespace it does not select is Stalled with NotAllowed, and so are
	// its Tenants; its tenants' data is left alone.
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
	// uses says what an ExpenseApp may use the database as: Home (spec.database: the registry, the
	// routing and tenants) and Shard (spec.shards: tenants only). Both by default.
	// +kubebuilder:default={Home,Shard}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +listType=set
	// +optional
	Uses []DatabaseUse `json:"uses,omitempty"`
}

// Allows says whether the declaration lets a database be used as use.
func (s *ClusterDatabaseSpec) Allows(use DatabaseUse) bool {
	if len(s.Uses) == 0 {
		return true
	}
	for _, u := range s.Uses {
		if u == use {
			return true
		}
	}
	return false
}

// ClusterDatabase declares, for the whole cluster, a PostgreSQL database that Tenantry may put tenants
// in: the platform team owns it, as it owns a cert-manager ClusterIssuer or a Gateway API GatewayClass.
// It holds the database's admin Secret (in the operator's namespace), selects the namespaces that may use
// it, and says whether it may be a home database, a shard, or both. ExpenseApps refer to it by name
// (spec.database.clusterDatabase, spec.shards[].clusterDatabase), and so never hold, nor read, the
// admin credential. Rights in a namespace do not reach cluster-scoped objects.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=tenantry
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.spec.secretRef.name`
// +kubebuilder:printcolumn:name="Uses",type=string,JSONPath=`.spec.uses`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterDatabase struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the database.
	Spec ClusterDatabaseSpec `json:"spec"`
}

// ClusterDatabaseList is a list of ClusterDatabases.
// +kubebuilder:object:root=true
type ClusterDatabaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterDatabase `json:"items"`
}
