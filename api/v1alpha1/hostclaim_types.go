package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HostClaimTenant names the Tenant that holds a host.
type HostClaimTenant struct {
	// namespace of the Tenant.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// name of the Tenant.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// uid of the Tenant: a Tenant of the same name created again is another holder.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid"`
}

// HostClaimSpec says who holds the host.
type HostClaimSpec struct {
	// tenant holds the host; it cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a HostClaim's tenant is immutable: delete the claim instead"
	Tenant HostClaimTenant `json:"tenant"`
}

// HostClaim records, cluster-wide, which Tenant holds a host: its name is the host. The operator
// creates it before it registers a Tenant with the host and deletes it when the Tenant lets the host
// go; the API server's unique names decide between two Tenants that claim one host, whatever their
// namespaces or databases, and the first claim holds. Only the operator writes HostClaims: rights in a
// namespace do not reach cluster-scoped objects.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=tenantry
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.tenant.namespace`
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenant.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HostClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says who holds the host.
	Spec HostClaimSpec `json:"spec"`
}

// HostClaimList is a list of HostClaims.
// +kubebuilder:object:root=true
type HostClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HostClaim `json:"items"`
}
